"""The metric names a running stack really exports: every agent service and the gateway, after one problem.

Scrapes each service's /metrics at the port it announces in NATS discovery, and reads the gateway's
registry; names are as Prometheus stores them (counters with _total, histograms with _bucket/_sum/_count).
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import httpx
import nats
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from conclave.v1 import agents_pb2, problem_pb2
from services.bus import topology
from services.client.solve import solve
from services.inference.app import InferenceApp
from services.inference.backends.scripted import ScriptedBackend, prompt_text
from services.inference.settings import InferenceSettings
from services.stack.discovery import discover
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


async def exported_metric_names(nats_url: str, tmp: Path) -> set[str]:
    script = team()
    backend = ScriptedBackend(lambda req: script.reply(agents_pb2.Role.Value(f"ROLE_{req.role.upper()}"),
                                                       prompt_text(req)))
    registry = CollectorRegistry()
    nc = await nats.connect(nats_url)
    await topology.declare(nc.jetstream(), FAST)
    app = InferenceApp(InferenceSettings(nats_url=nats_url, backend="scripted", grpc_port=0), registry,
                       backend=backend, js=nc.jetstream())
    await app.start()
    stack = InProcessStack(nats_url, app.address, tmp / "archive")
    try:
        await stack.start()
        problem = problem_pb2.Problem(id="metrics-1", kind=problem_pb2.PROBLEM_KIND_MATH, text="What is 2+3?",
                                      profile="math500", reference_answer="5")
        result = await solve(nc, problem, timeout_s=60)
        assert result.status == "ok", result
        names = names_in(generate_latest(registry).decode())
        async with httpx.AsyncClient(timeout=10) as http:
            for svc in await discover(nc, 0.5):
                port = svc.metadata.get("metrics_port")
                if port:
                    names |= names_in((await http.get(f"http://127.0.0.1:{port}/metrics")).text)
        return names
    finally:
        await stack.stop()
        await app.close()
        with contextlib.suppress(Exception):
            await nc.close()
