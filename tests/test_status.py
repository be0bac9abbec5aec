"""`conclave status` after real work: counts from the JetStream consumers, the model pods, NATS."""

from __future__ import annotations

import asyncio
import json
import os
import sys

import pytest

from conclave.v1 import problem_pb2
from services.stack.status import gather
from tests.agents.scripts import team
from tests.conftest import REPO, eventually

pytestmark = pytest.mark.asyncio


def problem(pid: str) -> problem_pb2.Problem:
    return problem_pb2.Problem(id=pid, kind=problem_pb2.PROBLEM_KIND_MATH, text="What is 2+3?", profile="math500",
                               reference_answer="5")


async def test_status_counts_the_work_each_service_did(agent_stack, nats_server):
    async with agent_stack(team()) as env:
        for i in range(2):
            assert (await env.solve(problem(f"status-{i}"))).stop_reason == "accepted"
        # Two problems of one accepted turn each: two CEO problems, two recruits, two solutions, four reviews
        # (at least: a redelivery, answered from the stored reply, counts as a message done too).
        want = {"ceo": 2, "recruiter": 2, "solver": 2, "critic": 4, "evaluator": 2}

        async def settled():
            # A worker acks just after it publishes its reply: wait for the last acks.
            st = await gather(env.nc, inference_addr=env.gateway_addr, credentials=env.gateway_credentials())
            return st if all(w.done >= want.get(w.name, 0) and not w.in_flight for w in st.services) else None

        status = await eventually(settled, timeout=30)
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "services.cli.main", "status", "--nats-url", nats_server.url,
            "--inference-addr", env.gateway_addr, "--json", cwd=REPO, env={**os.environ, **env.nats_env},
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        out, err = await asyncio.wait_for(proc.communicate(), 60)
        table = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "services.cli.main", "status", "--nats-url", nats_server.url,
            "--inference-addr", env.gateway_addr, cwd=REPO, env={**os.environ, **env.nats_env, "COLUMNS": "200"},
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        text, _ = await asyncio.wait_for(table.communicate(), 60)
    work = {s.name: s for s in status.services}
    assert work["executor"].done == 0 and all(work[n].errors == 0 for n in want)
    assert work["critic"].pending == work["critic"].ack_pending == 0 and work["critic"].deliveries >= 4
    assert work["critic"].replicas == 1 and work["intake"].replicas == 1 and not work["intake"].consumer
    # The model pods, as the gateway sees them.
    assert status.model_pods is not None and status.model_pods.serving == "SERVING"
    (pods, healthy), = status.model_pods.models.values()
    assert pods and healthy == pods
    # NATS and JetStream.
    assert status.nats.jetstream and status.nats.version
    streams = {s.name: s for s in status.nats.streams}
    assert streams["RESULTS"].messages == 2 and streams["TRAJECTORIES"].messages == 2
    # The command prints the same, as JSON here.
    assert proc.returncode == 0, err.decode()
    doc = json.loads(out)
    assert {s["name"]: s["done"] for s in doc["services"]}["critic"] == work["critic"].done
    # And as tables for a person: each service's row, the model pods, the streams.
    text = text.decode()
    row = next(line for line in text.splitlines() if "TASKS/critic" in line)
    cells = [c.strip() for c in row.strip("│┃ ").split("│")]
    assert cells[:3] == ["critic", "1", "TASKS/critic"] and int(cells[3]) == work["critic"].done, row
    assert "Model pods behind the gateway" in text and "SERVING" in text and "RESULTS" in text
