"""A real OTLP/gRPC trace receiver for tests, and a process-wide TracerProvider tests can point at it.

OpenTelemetry allows one global TracerProvider per process, so the provider is installed once and its
span processor is swapped per test (`exporting_to`); outside such a block spans are dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import grpc
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor


@dataclass
class ReceivedSpan:
    service: str
    scope: str
    name: str
    trace_id: str
    span_id: str
    parent_id: str
    kind: int
    attributes: dict[str, object]


@dataclass
class OtlpReceiver(trace_service_pb2_grpc.TraceServiceServicer):
    spans: list[ReceivedSpan] = field(default_factory=list)
    address: str = ""

    async def Export(self, request, context):  # noqa: N802 - the gRPC method name
        for rs in request.resource_spans:
            service = next((a.value.string_value for a in rs.resource.attributes if a.key == "service.name"), "")
            for ss in rs.scope_spans:
                for s in ss.spans:
                    attrs = {a.key: _value(a.value) for a in s.attributes}
                    self.spans.append(ReceivedSpan(service=service, scope=ss.scope.name, name=s.name, trace_id=s.trace_id.hex(),
                                                   span_id=s.span_id.hex(), parent_id=s.parent_span_id.hex(),
                                                   kind=s.kind, attributes=attrs))
        return trace_service_pb2.ExportTraceServiceResponse()

    def trace(self, trace_id: str) -> list[ReceivedSpan]:
        return [s for s in self.spans if s.trace_id == trace_id]


def _value(v) -> object:
    kind = v.WhichOneof("value")
    return getattr(v, kind) if kind else None


@contextlib.asynccontextmanager
async def otlp_receiver() -> AsyncIterator[OtlpReceiver]:
    receiver = OtlpReceiver()
    server = grpc.aio.server()
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(receiver, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    receiver.address = f"127.0.0.1:{port}"
    try:
        yield receiver
    finally:
        await server.stop(0)


class _Switch(SpanProcessor):
    def __init__(self) -> None:
        self.target: SpanProcessor | None = None

    def on_start(self, span, parent_context=None) -> None:
        if self.target is not None:
            self.target.on_start(span, parent_context)

    def on_end(self, span: ReadableSpan) -> None:
        if self.target is not None:
            self.target.on_end(span)

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self.target.force_flush(timeout_millis) if self.target is not None else True


_SWITCH = _Switch()


def _provider() -> TracerProvider:
    current = trace.get_tracer_provider()
    if isinstance(current, TracerProvider):
        return current
    provider = TracerProvider()
    provider.add_span_processor(_SWITCH)
    trace.set_tracer_provider(provider)
    return provider


@contextlib.asynccontextmanager
async def exporting_to(receiver: OtlpReceiver) -> AsyncIterator[None]:
    """Spans of this process go over OTLP to `receiver` (the SDK's own exporter) inside the block."""
    _provider()
    processor = BatchSpanProcessor(OTLPSpanExporter(endpoint=f"http://{receiver.address}", insecure=True),
                                   schedule_delay_millis=100)
    _SWITCH.target = processor
    try:
        yield
    finally:
        # In a thread: the receiver answers on this event loop, which must keep running meanwhile.
        await asyncio.to_thread(processor.force_flush)
        _SWITCH.target = None
        await asyncio.to_thread(processor.shutdown)


def _serve_counting(port: int) -> None:
    """`python -m tests.helpers.otlp PORT`: a receiver in a process of its own (for benchmarks, so that
    decoding spans does not compete with what is measured); prints the spans and traces seen on SIGTERM."""
    import signal
    import threading
    from concurrent import futures

    seen = {"spans": 0, "traces": set()}

    class Counting(trace_service_pb2_grpc.TraceServiceServicer):
        def Export(self, request, context):  # noqa: N802 - the gRPC method name
            for rs in request.resource_spans:
                for ss in rs.scope_spans:
                    seen["spans"] += len(ss.spans)
                    seen["traces"].update(s.trace_id for s in ss.spans)
            return trace_service_pb2.ExportTraceServiceResponse()

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(Counting(), server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    print("ready", flush=True)
    done.wait()
    server.stop(1)
    print(f"{seen['spans']} {len(seen['traces'])}", flush=True)


if __name__ == "__main__":
    import sys

    _serve_counting(int(sys.argv[1]))
