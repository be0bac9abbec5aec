"""OpenTelemetry tracing: one trace per problem. Its context travels forward only: in the NATS headers of the
problem and of each role task, in the gRPC metadata of each model call, and in the traceparent header of
each pod request. Replies, results and events carry none; a step span ends when its reply arrives.

intake.submit -> ceo.problem -> ceo.turn -> ceo.<phase> -> step.<role> (one per task published; ceo/spans.py)
-> <role>.task (the role worker) -> /conclave.v1.Inference/Generate (gRPC client span, `grpc_client_span`)
-> gateway.generate -> pod.request (each attempt on a model pod; services/inference/spans.py). The CEO's own
model call hangs directly under ceo.decide.

`configure` (called once per process by lifecycle.main) installs the SDK's TracerProvider, so trace ids
are real and reach the logs, the Result and the trajectory even when nothing is exported. Spans are
exported over OTLP only when the standard OTEL_EXPORTER_OTLP_ENDPOINT (or _TRACES_ENDPOINT) is set; the
exporter reads the other OTEL_* variables itself, and OTEL_TRACES_EXPORTER=none turns export off.
Without an exporter the sampler records nothing (ALWAYS_OFF): spans still get real ids, which propagate,
but no attributes, events or timings are kept for spans nobody reads. A trace is recorded from the service
that starts it (intake) on, so set the endpoint on every service of a deployment, as deploy/ does.
With an exporter the SDK's sampler applies (OTEL_TRACES_SAMPLER; default: parent-based, always on).
Attributes are bounded facts (role, turn, round, tokens, outcome); never the problem text.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import secrets
from collections.abc import Iterator, Mapping, MutableMapping
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.propagate import extract, inject
from opentelemetry.trace import Span, SpanKind, Status, StatusCode

from services.bus.headers import TRACEPARENT

log = logging.getLogger(__name__)

ENDPOINT_VARS = ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")

# Span attribute names (one place, so the dashboard, tests and docs agree).
ROLE, TURN, ROUND, INDEX = "conclave.role", "conclave.turn", "conclave.round", "conclave.index"
TOKENS, OUTCOME = "conclave.tokens", "conclave.outcome"
POD, ATTEMPT = "conclave.pod", "conclave.attempt"


def export_endpoint(environ: Mapping[str, str] | None = None) -> str:
    env = os.environ if environ is None else environ
    return next((env[v] for v in ENDPOINT_VARS if env.get(v)), "")


def configure(service: str, environ: Mapping[str, str] | None = None) -> Any | None:
    """Installs the SDK TracerProvider for this process; returns it (None when OTEL_SDK_DISABLED=true).

    With no OTLP endpoint the provider gives spans real ids but records and exports nothing."""
    env = os.environ if environ is None else environ
    if env.get("OTEL_SDK_DISABLED", "").lower() == "true":
        return None
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider

    resource = Resource.create({"service.name": env.get("OTEL_SERVICE_NAME") or f"conclave-{service}",
                                "service.namespace": "conclave"})
    endpoint = export_endpoint(env)
    if not endpoint or env.get("OTEL_TRACES_EXPORTER", "otlp").lower() == "none":
        from opentelemetry.sdk.trace.sampling import ALWAYS_OFF

        # Ids only: recording spans that no exporter will read costs every hop CPU on the critical path.
        provider = TracerProvider(resource=resource, sampler=ALWAYS_OFF)
    else:
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        provider = TracerProvider(resource=resource)
        # The exporter reads OTEL_EXPORTER_OTLP_* (endpoint, headers, insecure, timeout) itself.
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
        log.info("exporting traces over OTLP", extra={"endpoint": endpoint})
    trace.set_tracer_provider(provider)
    return provider


def shutdown() -> None:
    """Flushes what is still batched (called when the process stops)."""
    provider = trace.get_tracer_provider()
    with contextlib.suppress(Exception):
        provider.shutdown()  # type: ignore[attr-defined]


@functools.cache
def tracer(service: str) -> trace.Tracer:
    """The tracer of one service: its instrumentation scope names the service even when several share a process.
    Made once per service: the SDK builds a new Tracer on every get_tracer. One made before `configure` is
    the API's proxy, which uses the provider installed later."""
    return trace.get_tracer(f"conclave.{service}")


def inject_headers(headers: MutableMapping[str, str], ctx: otel_context.Context | None = None) -> None:
    """Adds traceparent/tracestate for the current (or given) context; starts a trace if there is none."""
    inject(headers, context=ctx)
    if TRACEPARENT not in headers:
        headers[TRACEPARENT] = new_traceparent()


def extract_context(headers: Mapping[str, str] | None) -> otel_context.Context:
    return extract(dict(headers or {}))


def new_traceparent() -> str:
    return f"00-{secrets.token_hex(16)}-{secrets.token_hex(8)}-01"


@contextlib.contextmanager
def grpc_client_span(service: str, method: str) -> Iterator[list[tuple[str, str]]]:
    """A CLIENT span around one gRPC call, named by its full method as OTel's gRPC instrumentation names it;
    yields the span's context as the call's metadata. The instrumentation's grpc.aio interceptor does the
    same but puts every streamed message through an intercepted call, which costs each model call more
    than the whole span."""
    rpc_service, _, rpc_method = method.strip("/").partition("/")
    with tracer(service).start_as_current_span(
            method, kind=SpanKind.CLIENT,
            attributes={"rpc.system": "grpc", "rpc.service": rpc_service, "rpc.method": rpc_method}):
        yield grpc_metadata()


def grpc_metadata() -> list[tuple[str, str]]:
    """The current context as gRPC metadata, for callers without the OTel client interceptor."""
    carrier: dict[str, str] = {}
    inject_headers(carrier)
    return list(carrier.items())


current_span = trace.get_current_span


def trace_id_of(span: Span | None = None) -> str:
    """The 32-hex trace id of a span (default: the current one); "" when there is none."""
    ctx = (span or trace.get_current_span()).get_span_context()
    return trace.format_trace_id(ctx.trace_id) if ctx.is_valid else ""


def traceparent_of(span: Span) -> str:
    """The W3C traceparent header value that makes `span` the parent of the receiver's spans."""
    carrier: dict[str, str] = {}
    inject(carrier, context=trace.set_span_in_context(span))
    return carrier.get(TRACEPARENT, "")


def set_outcome(span: Span, outcome: str, *, error: bool = False, **attributes: Any) -> None:
    span.set_attribute(OUTCOME, outcome)
    for key, value in attributes.items():
        span.set_attribute(f"conclave.{key}", value)
    if error:
        span.set_status(Status(StatusCode.ERROR, outcome))


@contextlib.contextmanager
def consuming(service: str, name: str, headers: Mapping[str, str] | None, **attributes: Any) -> Iterator[Span]:
    """A CONSUMER span for a message taken from the bus, child of the context its publisher put in the headers."""
    with tracer(service).start_as_current_span(name, context=extract_context(headers), kind=SpanKind.CONSUMER,
                                               attributes=_attrs(attributes)) as span:
        yield span


def _attrs(attributes: Mapping[str, Any]) -> dict[str, Any]:
    return {f"conclave.{k}": v for k, v in attributes.items() if v is not None}
