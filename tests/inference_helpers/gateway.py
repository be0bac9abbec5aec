"""An in-process gateway (InferenceApp, no NATS) with a gRPC stub for tests."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import grpc
from prometheus_client import CollectorRegistry

from conclave.v1 import inference_pb2, inference_pb2_grpc
from services.inference.app import InferenceApp
from services.inference.backends.base import Backend
from services.inference.settings import InferenceSettings


@dataclass
class RunningGateway:
    app: InferenceApp
    stub: inference_pb2_grpc.InferenceStub
    channel: grpc.aio.Channel

    @property
    def registry(self) -> CollectorRegistry:
        return self.app.registry

    def metric(self, name: str, **labels: str) -> float:
        return self.registry.get_sample_value(name, labels) or 0.0

    async def generate(self, req: inference_pb2.GenerateRequest, deadline_s: float = 60.0
                       ) -> tuple[list[str], inference_pb2.Usage]:
        """One call, read to its end; `deadline_s` is the gRPC deadline."""
        chunks: list[str] = []
        usage = None
        async for resp in self.stub.Generate(req, timeout=deadline_s):
            if resp.text:
                chunks.append(resp.text)
            if resp.HasField("usage"):
                usage = resp.usage
        assert usage is not None, "the stream ended without usage"
        return chunks, usage


@contextlib.asynccontextmanager
async def running_gateway(pods: list[str] | None = None, backend: Backend | None = None,
                          channel_credentials: grpc.ChannelCredentials | None = None,
                          **overrides: Any) -> AsyncIterator[RunningGateway]:
    # The settings name the backend kind; an injected backend object decides it.
    values: dict[str, Any] = {"grpc_port": 0, "health_interval_s": 0.5,
                              "backend": backend.kind if backend is not None else "openai"}
    if pods is not None:
        values["pods"] = pods
    values.update(overrides)
    app = InferenceApp(InferenceSettings(**values), backend=backend)
    await app.start()
    upkeep = asyncio.create_task(app.background())
    channel = grpc.aio.secure_channel(app.address, channel_credentials) if channel_credentials else \
        grpc.aio.insecure_channel(app.address)
    try:
        yield RunningGateway(app, inference_pb2_grpc.InferenceStub(channel), channel)
    finally:
        await channel.close()
        upkeep.cancel()
        await asyncio.gather(upkeep, return_exceptions=True)
        await app.close()


def chat(content: str, max_tokens: int, **fields: Any) -> inference_pb2.GenerateRequest:
    return inference_pb2.GenerateRequest(messages=[inference_pb2.ChatMessage(role="user", content=content)],
                                         max_tokens=max_tokens, **fields)
