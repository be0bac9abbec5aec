"""The gateway's spans: one SERVER span per Generate call, one CLIENT span per attempt on a model pod."""

from __future__ import annotations

from typing import Any

from opentelemetry import trace
from opentelemetry.trace import Span, SpanKind

from services.bus.headers import TRACEPARENT
from services.runtime import tracing
from services.runtime.tracing import ATTEMPT, POD, ROLE


def gateway_span(traceparent: str, role: str, model: str) -> Span:
    """The gateway's SERVER span of one Generate call, child of the caller's (gRPC metadata) context."""
    parent = tracing.extract_context({TRACEPARENT: traceparent}) if traceparent else None
    return tracing.tracer("inference").start_span("gateway.generate", context=parent, kind=SpanKind.SERVER,
                                          attributes={ROLE: role, "conclave.model": model})


def end_gateway_span(span: Span, outcome: str, result: Any | None) -> None:
    tokens = result.prompt_tokens + result.completion_tokens if result is not None else 0
    tracing.set_outcome(span, outcome, error=outcome not in ("ok", "cancelled"), tokens=tokens)
    if result is not None:
        span.set_attribute(POD, result.pod)
    span.end()


def pod_span(parent: Span, pod: str, attempt: int) -> Span:
    """One attempt of a generation on one model pod."""
    return tracing.tracer("inference").start_span("pod.request", context=trace.set_span_in_context(parent),
                                          kind=SpanKind.CLIENT, attributes={POD: pod, ATTEMPT: attempt})


def end_pod_span(span: Span, outcome: str, usage: Any | None) -> None:
    tokens = usage.prompt_tokens + usage.completion_tokens if usage is not None else 0
    tracing.set_outcome(span, outcome, error=outcome != "ok", tokens=tokens)
    span.end()
