"""The real inference gateway (gRPC server, router, admission, ledger) on the scripted backend."""

from __future__ import annotations

import contextlib
from pathlib import Path

import nats

from conclave.v1 import agents_pb2
from services.inference.app import InferenceApp
from services.inference.backends.scripted import ScriptedBackend, prompt_text
from services.inference.settings import InferenceSettings
from tests.agents.scripts import Script


@contextlib.asynccontextmanager
async def scripted_gateway(script: Script, *, latency_s: float, nats_url: str, tmp: Path,
                           connect_options: dict | None = None, tls_env: dict[str, str] | None = None):
    def answer(req) -> str:
        return script.reply(agents_pb2.Role.Value(f"ROLE_{req.role.upper()}"), prompt_text(req))

    backend = ScriptedBackend(answer, latency_s=latency_s)
    settings = InferenceSettings(nats_url=nats_url, backend="scripted", grpc_port=0, pod_max_inflight=64,
                                 pod_queue_limit=256, health_interval_s=0.5,
                                 # CONCLAVE_GRPC_SERVER_CERT -> grpc_server_cert, ...: mTLS as `conclave up` runs it
                                 **{k.removeprefix("CONCLAVE_").lower(): v for k, v in (tls_env or {}).items()})
    # The gateway's own NATS user: the token ledger is all it may touch.
    nc = await nats.connect(nats_url, **(connect_options or {}))
    app = InferenceApp(settings, backend=backend, js=nc.jetstream())
    await app.start()
    try:
        yield app.address
    finally:
        await app.close()
        await nc.close()
