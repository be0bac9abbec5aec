"""The in-process vLLM engine (`vllm.v1.engine.async_llm.AsyncLLM`), for a gateway that owns its GPU.

Thin on purpose: GenRequest -> SamplingParams, stream DELTA outputs, exact token counts from the engine,
abort on cancel (closing the `generate` iterator makes AsyncLLM abort the request). vLLM is an optional
extra (`pip install conclave[vllm]`) and is imported only when this backend is built. Written against
vLLM 0.24's AsyncLLM API; CI cannot run it (no GPU), a unit test with a fake engine covers the mapping.
"""

from __future__ import annotations

import inspect
import itertools
import os
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from services.inference.backends.base import Chunk, GenRequest, PodError, PodUsage, sampling_fields
from services.inference.pods import Pod

if TYPE_CHECKING:
    from services.inference.settings import InferenceSettings

LOCAL_POD = "vllm://local"


# SamplingParams keyword arguments for a request (testable without vLLM).
sampling_kwargs = sampling_fields


class VllmEngineBackend:
    kind = "vllm"

    def __init__(self, engine: Any, model_name: str, *, sampling_params: Any = None, delta_kind: Any = None) -> None:
        self._engine = engine
        self.model_name = model_name
        if sampling_params is None:
            from vllm import SamplingParams
            from vllm.sampling_params import RequestOutputKind

            sampling_params, delta_kind = SamplingParams, RequestOutputKind.DELTA
        self._sampling_params = sampling_params
        self._delta = delta_kind
        self._ids = itertools.count()
        self._tokenizer: Any = None

    @classmethod
    def from_settings(cls, settings: InferenceSettings) -> VllmEngineBackend:
        try:
            from vllm.engine.arg_utils import AsyncEngineArgs
            from vllm.v1.engine.async_llm import AsyncLLM
        except ImportError as exc:
            raise RuntimeError("backend 'vllm' needs vLLM: pip install 'conclave[vllm]'") from exc
        if not settings.vllm_model:
            raise RuntimeError("backend 'vllm' needs CONCLAVE_VLLM_MODEL (a local path or a model id)")
        args = AsyncEngineArgs(
            model=settings.vllm_model,
            served_model_name=[settings.default_model] if settings.default_model else None,
            max_model_len=settings.vllm_max_model_len or None,
            gpu_memory_utilization=settings.vllm_gpu_memory_utilization,
            tensor_parallel_size=settings.vllm_tensor_parallel_size,
            enable_prefix_caching=True,
        )
        engine = AsyncLLM.from_engine_args(args)
        return cls(engine, settings.default_model or settings.vllm_model)

    async def _get_tokenizer(self) -> Any:
        if self._tokenizer is None:
            tok = self._engine.get_tokenizer()
            # Older releases made get_tokenizer a coroutine.
            self._tokenizer = await tok if inspect.isawaitable(tok) else tok
        return self._tokenizer

    async def _prompt(self, req: GenRequest) -> str | dict[str, list[int]]:
        """What the engine gets: raw text for a completion (the engine tokenizes it as /v1/completions
        does), token ids for a chat. The chat template already writes the BOS its model wants; text
        would be tokenized again with special tokens, and a model like Llama would see two."""
        if not req.is_chat:
            return req.prompt + req.assistant_prefix
        tok = await self._get_tokenizer()
        messages = [{"role": m.role, "content": m.content} for m in req.messages]
        text = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return {"prompt_token_ids": list(tok.encode(text + req.assistant_prefix, add_special_tokens=False))}

    async def stream(self, req: GenRequest, pod: Pod) -> AsyncIterator[Chunk]:
        params = self._sampling_params(output_kind=self._delta, **sampling_kwargs(req))
        prompt = await self._prompt(req)
        request_id = f"conclave-{os.getpid()}-{next(self._ids)}"
        generated = 0
        prompt_tokens = 0
        finish = ""
        gen = self._engine.generate(prompt, params, request_id)
        try:
            async for out in gen:
                if out.prompt_token_ids is not None:
                    prompt_tokens = len(out.prompt_token_ids)
                comp = out.outputs[0]
                generated += len(comp.token_ids)
                if comp.text:
                    yield Chunk(comp.text)
                if comp.finish_reason:
                    finish = comp.finish_reason
        except Exception as exc:
            if generated == 0 and type(exc).__name__ == "EngineDeadError":
                raise PodError(f"vLLM engine is dead: {exc!r}", retryable=False) from exc
            raise PodError(f"vLLM generation failed: {exc!r}", retryable=False) from exc
        finally:
            # Closing the generator aborts the request inside AsyncLLM (GeneratorExit path).
            await gen.aclose()
        yield Chunk(usage=PodUsage(prompt_tokens, generated, finish or "stop"))

    async def count_tokens(self, req: GenRequest, pod: Pod) -> int:
        prompt = await self._prompt(req)
        if isinstance(prompt, dict):
            return len(prompt["prompt_token_ids"])
        tok = await self._get_tokenizer()
        return len(tok.encode(prompt, add_special_tokens=True))

    async def list_models(self, pod: Pod) -> list[str]:
        return [self.model_name]

    async def health(self, pod: Pod) -> bool:
        try:
            await self._engine.check_health()
        except Exception:
            return False
        return True

    async def close(self) -> None:
        self._engine.shutdown()
