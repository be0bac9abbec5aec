"""The gRPC face of the gateway: conclave.v1.Inference (+ grpc.health.v1). Protobuf lives only here."""

from __future__ import annotations

import asyncio
import contextlib
import logging

import grpc

from conclave.v1 import agents_pb2, inference_pb2, inference_pb2_grpc
from services.bus.headers import TRACEPARENT
from services.inference import failures
from services.inference.backends.base import GenRequest, Message, PodError
from services.inference.budget import ReasoningSpec
from services.inference.coalesce import coalesce
from services.inference.gateway import Call, Gateway, GatewayError, Result
from services.runtime.logs import problem_id_var

log = logging.getLogger(__name__)

_ROLES = ("system", "user", "assistant")


def call_from_proto(msg: inference_pb2.GenerateRequest, traceparent: str, default_margin: int) -> Call:
    """Validates a request and turns it into the gateway's plain types; raises GatewayError(INVALID_ARGUMENT)."""
    if msg.max_tokens <= 0:
        raise GatewayError("INVALID_ARGUMENT", "max_tokens must be positive")
    if bool(msg.messages) == bool(msg.prompt):
        raise GatewayError("INVALID_ARGUMENT", "set either messages or prompt (exactly one)")
    for m in msg.messages:
        if m.role not in _ROLES:
            raise GatewayError("INVALID_ARGUMENT", f"message role must be one of {_ROLES}, got {m.role!r}")
    req = GenRequest(
        model=msg.model,
        messages=tuple(Message(m.role, m.content) for m in msg.messages),
        prompt=msg.prompt,
        max_tokens=msg.max_tokens,
        temperature=msg.temperature if msg.HasField("temperature") and msg.temperature >= 0 else None,
        top_p=msg.top_p if msg.HasField("top_p") and msg.top_p >= 0 else None,
        stop=tuple(s for s in msg.stop if s),
        seed=msg.seed if msg.HasField("seed") else None,
        role=agents_pb2.Role.Name(msg.role).removeprefix("ROLE_").lower() if msg.role else "unspecified",
    )
    reasoning = None
    if msg.HasField("reasoning") and (msg.reasoning.prefill_think or msg.reasoning.budget_forcing):
        r = msg.reasoning
        reasoning = ReasoningSpec(
            prefill_think=r.prefill_think, budget_forcing=r.budget_forcing,
            margin=r.force_margin if r.force_margin > 0 else default_margin,
            think_open=r.think_open or "<think>", think_close=r.think_close or "</think>",
        )
    return Call(req=req, session_key=msg.session_key, priority=msg.priority, reasoning=reasoning, role=req.role,
                ledger_key=msg.ledger_key, traceparent=traceparent)


def usage_to_proto(r: Result) -> inference_pb2.Usage:
    return inference_pb2.Usage(
        prompt_tokens=r.prompt_tokens, completion_tokens=r.completion_tokens, finish_reason=r.finish_reason,
        ttft_s=r.ttft_s, total_s=r.total_s, pod=r.pod, extra_tokens=r.extra_tokens, raw_text=r.raw_text,
        visible_text=r.visible_text, model=r.model,
    )


class InferenceServicer(inference_pb2_grpc.InferenceServicer):
    def __init__(self, gateway: Gateway, *, request_timeout_s: float, default_margin: int, context_length: int,
                 count_mode: str, chars_per_token: float, hold_s: float = 0.0, hold_from: int = 1) -> None:
        self._gw = gateway
        # Streams in flight here: from hold_from on, each stream's messages are held hold_s (coalesce.py).
        self._streams = 0
        self._hold_s = hold_s
        self._hold_from = hold_from
        gateway.metrics.streams.set_function(lambda: self._streams)
        self._request_timeout_s = request_timeout_s
        self._default_margin = default_margin
        self._context_length = context_length
        self._count_mode = count_mode
        self._chars_per_token = chars_per_token

    async def Generate(self, request: inference_pb2.GenerateRequest, context: grpc.aio.ServicerContext) -> None:
        traceparent = ""
        for key, value in context.invocation_metadata() or ():
            if key == TRACEPARENT:
                traceparent = value
                break
        error: GatewayError | None = None
        limit = 0.0
        token = problem_id_var.set(request.ledger_key or request.session_key)
        self._streams += 1
        try:
            call = call_from_proto(request, traceparent, self._default_margin)
            # deadline_s bounds the call on top of the gRPC deadline, which grpc enforces itself.
            limit = request.deadline_s if request.deadline_s > 0 else self._request_timeout_s
            write = context.write
            response = inference_pb2.GenerateResponse
            async with asyncio.timeout(limit):
                # final_only: the pod still streams to the gateway (TTFT, budget forcing), but the caller
                # gets the Result alone, which carries the whole text; nothing to coalesce.
                stream = self._gw.generate(call) if request.final_only else coalesce(self._gw.generate(call), self._hold)
                async with contextlib.aclosing(stream) as events:
                    async for event in events:
                        if type(event) is not str:
                            await write(response(usage=usage_to_proto(event)))  # type: ignore[arg-type]
                        elif not request.final_only:
                            await write(response(text=event))
        except GatewayError as exc:
            error = exc
        except TimeoutError:
            error = GatewayError("DEADLINE_EXCEEDED", f"the call took longer than its {limit:.1f}s deadline")
        finally:
            self._streams -= 1
            problem_id_var.reset(token)
        if error is not None:
            await context.abort(getattr(grpc.StatusCode, error.code), error.message,
                                trailing_metadata=failures.to_metadata(error.reason))

    def _hold(self) -> float:
        return self._hold_s if self._streams >= self._hold_from else 0.0

    async def ListModels(self, request: inference_pb2.ListModelsRequest,
                         context: grpc.aio.ServicerContext) -> inference_pb2.ListModelsResponse:
        by_model: dict[str, list[str]] = {}
        healthy = {pod.name for pod in self._gw.pool if pod.healthy}
        for pod in self._gw.pool:
            for model in pod.models:
                by_model.setdefault(model, []).append(pod.name)
        if self._gw.default_model and self._gw.default_model not in by_model:
            by_model[self._gw.default_model] = []
        return inference_pb2.ListModelsResponse(
            models=[inference_pb2.ModelInfo(id=m, pods=sorted(pods), context_length=self._context_length,
                                            healthy_pods=sorted(healthy.intersection(pods)))
                    for m, pods in sorted(by_model.items())],
            default_model=self._gw.default_model,
        )

    async def CountTokens(self, request: inference_pb2.CountTokensRequest,
                          context: grpc.aio.ServicerContext) -> inference_pb2.CountTokensResponse:
        req = GenRequest(model=request.model or self._gw.default_model,
                         messages=tuple(Message(m.role, m.content) for m in request.messages), prompt=request.prompt)
        if self._count_mode == "pod":
            # Any healthy pod will do, busy or not: tokenising is cheap and bypasses the slots.
            for pod in self._gw.router.candidates(""):
                try:
                    return inference_pb2.CountTokensResponse(tokens=await self._gw.backend.count_tokens(req, pod))
                except PodError as exc:
                    log.warning("token count failed on a pod", extra={"pod": pod.name, "error": str(exc)})
            await context.abort(grpc.StatusCode.UNAVAILABLE, "no pod could count the tokens; retry later")
        chars = len(req.prompt) + sum(len(m.content) + 8 for m in req.messages)
        return inference_pb2.CountTokensResponse(tokens=int(chars / self._chars_per_token) + 1)
