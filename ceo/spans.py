"""The CEO's spans: one per turn of a problem, one per phase, and one per role task it publishes."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import Span, SpanKind

from conclave.v1 import agents_pb2
from services.runtime import tracing
from services.runtime.tracing import INDEX, ROLE, ROUND, TURN


class TurnSpans:
    """The CEO's spans of one problem: one per turn, each phase a child of its turn.

    Built inside the ceo.problem span; a turn span stays open across the phases of its turn."""

    def __init__(self) -> None:
        self._tracer = tracing.tracer("ceo")
        self._parent = otel_context.get_current()
        self._turn: Span | None = None
        self._turn_no = -1

    @contextlib.contextmanager
    def phase(self, turn: int, round_: int, phase: str) -> Iterator[Span]:
        if self._turn is None or turn != self._turn_no:
            self.close()
            self._turn_no = turn
            self._turn = self._tracer.start_span("ceo.turn", context=self._parent, attributes={TURN: turn})
        ctx = trace.set_span_in_context(self._turn, self._parent)
        with self._tracer.start_as_current_span(f"ceo.{phase}", context=ctx,
                                                attributes={TURN: turn, ROUND: round_}) as span:
            yield span

    def close(self) -> None:
        if self._turn is not None:
            self._turn.end()
            self._turn = None

    async def __aenter__(self) -> TurnSpans:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()


class StepSpans:
    """The CEO's PRODUCER span of each role task it publishes, ended when the task's reply arrives.

    Its context travels in the task's headers, so the role worker's span is its child."""

    def __init__(self) -> None:
        self._tracer = tracing.tracer("ceo")
        self._open: dict[str, Span] = {}

    def start(self, step: str, task: Any) -> None:
        """Opens the span of one task (before its first publish)."""
        self._open[step] = self._tracer.start_span(f"step.{role_name(task.role)}", kind=SpanKind.PRODUCER,
                                                   attributes={ROLE: role_name(task.role), TURN: task.turn,
                                                               ROUND: task.round, INDEX: task.index})

    def headers(self, step: str, headers: dict[str, str]) -> dict[str, str]:
        """`headers` with the context of the step's span added (a re-published task keeps its span)."""
        span = self._open.get(step)
        tracing.inject_headers(headers, trace.set_span_in_context(span) if span is not None else None)
        return headers

    def arrived(self, step: str, reply: Any) -> None:
        span = self._open.pop(step, None)
        if span is not None:
            tokens = sum(c.prompt_tokens + c.completion_tokens for c in reply.calls)
            tracing.set_outcome(span, "error" if reply.error else "ok", error=bool(reply.error), tokens=tokens,
                        fallback=bool(reply.fallback))
            span.end()

    def timed_out(self, steps: list[str]) -> None:
        for step in steps:
            span = self._open.pop(step, None)
            if span is not None:
                tracing.set_outcome(span, "timeout", error=True)
                span.end()


def role_name(role: int) -> str:
    return agents_pb2.Role.Name(role).removeprefix("ROLE_").lower()
