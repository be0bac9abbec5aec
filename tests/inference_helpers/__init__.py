"""Helpers for the inference gateway tests: real llama.cpp pods as subprocesses, an in-process gateway."""
