"""W3C trace context carried in NATS headers and gRPC metadata.

We use the OpenTelemetry API's propagator only; exporting spans is left to the operator's SDK setup
(with no SDK installed the API is a no-op, and the traceparent still flows through unchanged).
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping, MutableMapping

from opentelemetry import context as otel_context
from opentelemetry.propagate import extract, inject

from services.bus.headers import TRACEPARENT


def inject_headers(headers: MutableMapping[str, str], ctx: otel_context.Context | None = None) -> None:
    """Adds traceparent/tracestate for the current (or given) context; starts a trace if there is none."""
    inject(headers, context=ctx)
    if TRACEPARENT not in headers:
        headers[TRACEPARENT] = new_traceparent()


def extract_context(headers: Mapping[str, str] | None) -> otel_context.Context:
    return extract(dict(headers or {}))


def new_traceparent() -> str:
    return f"00-{secrets.token_hex(16)}-{secrets.token_hex(8)}-01"


def child_traceparent(parent: str | None) -> str:
    """Same trace, new span id: what we forward when no OTel SDK is recording spans."""
    if parent and parent.count("-") == 3:
        version, trace_id, _span, flags = parent.split("-")
        return f"{version}-{trace_id}-{secrets.token_hex(8)}-{flags}"
    return new_traceparent()


def grpc_metadata(traceparent: str | None) -> list[tuple[str, str]]:
    return [(TRACEPARENT, child_traceparent(traceparent))]
