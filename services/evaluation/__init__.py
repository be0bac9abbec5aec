"""Benchmark loading and answer grading."""
