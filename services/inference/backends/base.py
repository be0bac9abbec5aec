"""The one interface every model backend implements, and the plain types that cross it.

Protobuf stays at the gRPC edge; routing, admission, budgets and metrics live outside the backends
and only see these types.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Protocol

from services.inference.pods import Pod


def sampling_fields(req: GenRequest) -> dict[str, Any]:
    """max_tokens and the sampling options a request sets, under the names both the OpenAI API and
    vLLM's SamplingParams use."""
    kw: dict[str, Any] = {"max_tokens": req.max_tokens}
    if req.temperature is not None:
        kw["temperature"] = req.temperature
    if req.top_p is not None:
        kw["top_p"] = req.top_p
    if req.stop:
        kw["stop"] = list(req.stop)
    if req.seed is not None:
        kw["seed"] = req.seed
    return kw


@dataclass(frozen=True, slots=True)
class Message:
    role: str
    content: str


@dataclass(slots=True)
class GenRequest:
    """One generation on one pod. Either `messages` (chat) or `prompt` (raw text) is set."""

    model: str
    messages: tuple[Message, ...] = ()
    prompt: str = ""
    max_tokens: int = 256
    temperature: float | None = None
    top_p: float | None = None
    stop: tuple[str, ...] = ()
    seed: int | None = None
    # The assistant's answer starts with this text, which the pod continues without echoing it: a
    # prefilled `<think>\n`, or everything generated so far when budget forcing resumes after `</think>`.
    # Chat: a trailing assistant message the template leaves open; raw prompt: appended to the prompt.
    assistant_prefix: str = ""
    # The agent role, for the scripted model's rules and for logs (never sent to a pod).
    role: str = ""
    # W3C trace context of this attempt's pod.request span: HTTP pods get it as the traceparent header, so a
    # vLLM started with --otlp-traces-endpoint continues the problem's trace.
    traceparent: str = ""

    @property
    def is_chat(self) -> bool:
        return bool(self.messages)


@dataclass(frozen=True, slots=True)
class PodUsage:
    """Exact counts as the pod reported them."""

    prompt_tokens: int
    completion_tokens: int
    finish_reason: str


@dataclass(frozen=True, slots=True)
class Chunk:
    text: str = ""
    # Present on the last chunk of a stream only.
    usage: PodUsage | None = None


class PodError(Exception):
    """A pod could not serve a request. `retryable`: another pod may succeed (connection refused, 5xx)."""

    def __init__(self, message: str, *, retryable: bool, status: int | None = None) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.status = status


class Backend(Protocol):
    """A way to run generations on pods.

    `stream` is an async generator: it raises PodError before its first chunk when the pod cannot take
    the request, yields text chunks, and ends with a chunk carrying the pod's exact usage. Closing it
    early (aclose, or cancelling the task iterating it) must abort the request on the pod.
    """

    kind: str

    def stream(self, req: GenRequest, pod: Pod) -> AsyncIterator[Chunk]: ...

    async def count_tokens(self, req: GenRequest, pod: Pod) -> int: ...

    async def list_models(self, pod: Pod) -> list[str]: ...

    async def health(self, pod: Pod) -> bool: ...

    async def close(self) -> None: ...
