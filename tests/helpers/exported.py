"""A live stack for observability tests: every agent service and the gateway (scripted backend, two model
pods, one of which fails once), its metrics endpoints, and the metric names it really exports.

Names are as Prometheus stores them (counters with _total, histograms with _bucket/_sum/_count).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import httpx
import nats
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from conclave.v1 import agents_pb2, inference_pb2, inference_pb2_grpc, problem_pb2
from services.bus import subjects, topology
from services.client.solve import solve
from services.inference.app import InferenceApp
from services.inference.backends.scripted import ScriptedBackend, prompt_text
from services.inference.ledger import Ledger
from services.inference.settings import InferenceSettings
from services.runtime.http import ProbeServer
from services.stack.discovery import discover
from services.stack.natsd import NatsServer
from tests.agents.scripts import team
from tests.agents.stack import InProcessStack
from tests.conftest import FAST

_SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "summary": ("_sum", "_count"),
             "info": ("_info",)}


def names_in(exposition: str) -> set[str]:
    out: set[str] = set()
    for family in text_string_to_metric_families(exposition):
        out.add(family.name)
        out |= {family.name + s for s in _SUFFIXES.get(family.type, ())}
        out |= {s.name for s in family.samples}
    return out


@dataclass
class LiveStack:
    nc: nats.NATS
    # service name -> the ports of its /metrics endpoints (the gateway's included, as "inference")
    targets: dict[str, list[int]]

    async def exported_names(self) -> set[str]:
        names: set[str] = set()
        async with httpx.AsyncClient(timeout=10) as http:
            for ports in self.targets.values():
                for port in ports:
                    names |= names_in((await http.get(f"http://127.0.0.1:{port}/metrics")).text)
        return names

    async def work(self, problems: int = 2) -> None:
        """Real work, and the failures the dashboard shows: problems solved (one with a critic that falls
        back), a pod failing before its first token (retried elsewhere, ejected), a call refused at its
        token ceiling, a dead letter."""
        for i in range(problems):
            text = "What is 2+3?" + (" (for a mumbling critic)" if i == 0 else "")
            problem = problem_pb2.Problem(id=f"live-{i}", kind=problem_pb2.PROBLEM_KIND_MATH, text=text,
                                          profile="math500", reference_answer="5")
            result = await solve(self.nc, problem, timeout_s=60)
            assert result.status == "ok", result
        await Ledger(self.nc.jetstream()).open("tiny-ceiling", 10)
        async with grpc.aio.insecure_channel(self.gateway) as channel:
            req = inference_pb2.GenerateRequest(messages=[inference_pb2.ChatMessage(role="user", content="hi")],
                                                max_tokens=100, ledger_key="tiny-ceiling",
                                                role=agents_pb2.ROLE_SOLVER)
            with contextlib.suppress(grpc.aio.AioRpcError):
                async for _ in inference_pb2_grpc.InferenceStub(channel).Generate(req, timeout=10):
                    pass
        await self.nc.publish(subjects.PROBLEMS_SUBMIT, b"\xff not a problem")
        await self.nc.flush()

    gateway: str = ""


@contextlib.asynccontextmanager
async def live_stack(nats_server: NatsServer, tmp: Path) -> AsyncIterator[LiveStack]:
    # A critic that never gives a verdict on one problem: the protocol's fallback (a parse-fallback series).
    script = team(critic=[(agents_pb2.ROLE_CRITIC, "mumbling critic", "Hmm.")])
    backend = ScriptedBackend(lambda req: script.reply(agents_pb2.Role.Value(f"ROLE_{req.role.upper()}"),
                                                       prompt_text(req)))
    registry = CollectorRegistry()
    nats_url = nats_server.url
    nc = await nats.connect(nats_url, **nats_server.connect_options())
    await topology.declare(nc.jetstream(), FAST)
    # Two pods; health probes rarely, so the pod that goes down is found by a call (retry, ejection).
    settings = InferenceSettings(**nats_server.settings_kwargs(), backend="scripted", grpc_port=0, health_interval_s=300,
                                 pods=["scripted://pod-a", "scripted://pod-b"])
    app = InferenceApp(settings, registry, backend=backend, js=nc.jetstream())
    await app.start()
    backend.down.add("pod-a")
    probe = ProbeServer(registry, lambda: True, "127.0.0.1", 0)
    await probe.start()
    stack = InProcessStack(nats_server.env(), app.address, tmp / "archive")
    try:
        await stack.start()
        targets: dict[str, list[int]] = {"inference": [probe.port]}
        for svc in await discover(nc, 0.5):
            if svc.metadata.get("metrics_port"):
                targets.setdefault(svc.name.removeprefix("conclave-"), []).append(int(svc.metadata["metrics_port"]))
        yield LiveStack(nc=nc, targets=targets, gateway=app.address)
    finally:
        await stack.stop()
        await probe.stop()
        await app.close()
        with contextlib.suppress(Exception):
            await nc.close()
