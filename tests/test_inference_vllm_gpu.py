"""The in-process vLLM backend on a real AsyncLLM and a GPU. CI has neither, so this is skipped there;
its CPU twin is the fake-engine test in test_inference_units.py, and docs/gpu.md records the GPU run.

  CONCLAVE_TEST_VLLM_MODEL=/path/to/model python -m pytest tests/test_inference_vllm_gpu.py
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest

from services.inference.backends.base import GenRequest, Message
from services.inference.backends.vllm_engine import VllmEngineBackend
from services.inference.settings import InferenceSettings

MODEL = os.environ.get("CONCLAVE_TEST_VLLM_MODEL", "")


def _cuda() -> bool:
    # Not torch.cuda.is_available(): CUDA initialised in this process breaks the engine core's fork.
    return Path("/dev/nvidiactl").exists()


pytestmark = [
    pytest.mark.skipif(importlib.util.find_spec("vllm") is None, reason="vLLM is not installed"),
    pytest.mark.skipif(not MODEL, reason="CONCLAVE_TEST_VLLM_MODEL names no model"),
    pytest.mark.skipif(not MODEL or not _cuda(), reason="no GPU"),
    pytest.mark.timeout(600),
]


async def test_prompts_reach_the_engine_as_the_gateway_counts_them():
    settings = InferenceSettings(backend="vllm", vllm_model=MODEL, vllm_max_model_len=4096,
                                 vllm_gpu_memory_utilization=0.3, default_model="under-test")
    backend = VllmEngineBackend.from_settings(settings)
    try:
        tok = await backend._get_tokenizer()
        messages = (Message("system", "You are terse."), Message("user", "Say hello."))
        chat = GenRequest(model="under-test", messages=messages, max_tokens=8, temperature=0.0)
        templated = tok.apply_chat_template([{"role": m.role, "content": m.content} for m in messages],
                                            tokenize=False, add_generation_prompt=True)
        # The template's tokens and nothing else: no second BOS from a tokenizer that adds one.
        expected = tok.encode(templated, add_special_tokens=False)

        chat_counted = counted = await backend.count_tokens(chat, None)  # type: ignore[arg-type]
        chunks = [c async for c in backend.stream(chat, None)]  # type: ignore[arg-type]
        usage = chunks[-1].usage
        assert usage is not None
        assert counted == len(expected) == usage.prompt_tokens
        assert 1 <= usage.completion_tokens <= 8

        # A raw completion is tokenized by the engine itself, with the special tokens /v1/completions adds.
        raw = GenRequest(model="under-test", prompt="Once upon a time", max_tokens=4, temperature=0.0)
        counted = await backend.count_tokens(raw, None)  # type: ignore[arg-type]
        usage = [c async for c in backend.stream(raw, None)][-1].usage  # type: ignore[arg-type]
        assert usage is not None and usage.prompt_tokens == counted
        print(f"chat prompt: {chat_counted} tokens; raw prompt: {counted} tokens; tokenizer BOS: {tok.bos_token!r}")
    finally:
        await backend.close()
