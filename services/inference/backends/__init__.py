"""Model backends: one async interface (base.Backend), three implementations.

Imports are lazy so that the gateway never loads vLLM unless it is asked to.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from services.inference.backends.base import Backend
    from services.inference.settings import InferenceSettings


def pod_api_key(settings: InferenceSettings) -> str:
    if settings.pod_api_key_file is not None:
        return settings.pod_api_key_file.read_text(encoding="utf-8").strip()
    return settings.pod_api_key.get_secret_value()


def make_backend(settings: InferenceSettings) -> Backend:
    if settings.backend == "openai":
        from services.inference.backends.openai_http import OpenAIHttpBackend

        return OpenAIHttpBackend(
            connect_timeout_s=settings.connect_timeout_s,
            read_timeout_s=settings.read_timeout_s,
            health_timeout_s=settings.health_timeout_s,
            # One connection per admitted or queued request, plus health checks.
            max_connections=settings.pod_max_inflight + settings.pod_queue_limit + 4,
            api_key=pod_api_key(settings),
        )
    if settings.backend == "scripted":
        from services.inference.backends.scripted import ScriptedBackend, load_script

        return ScriptedBackend(
            load_script(settings.scripted_file) if settings.scripted_file else [],
            latency_s=settings.scripted_latency_s,
            token_latency_s=settings.scripted_token_latency_s,
        )
    if settings.backend == "vllm":
        from services.inference.backends.vllm_engine import VllmEngineBackend

        return VllmEngineBackend.from_settings(settings)
    raise ValueError(f"unknown backend {settings.backend!r}")
