"""One problem end to end on a real model: the llama.cpp pod (SmolLM2-135M), the gateway and every agent
service as its own process, exactly as `conclave up` runs them. The tiny model is weak, so this pins the
plumbing (every role spoke through the real model, one result, one trajectory), not the answer."""

from __future__ import annotations

import asyncio
import dataclasses

import nats
import pytest

from conclave.v1 import agents_pb2, problem_pb2
from services.bus import topology
from services.stack.natsd import free_port
from tests.agents.env import AgentEnv
from tests.agents.stack import AGENT_SERVICES
from tests.conftest import FAST
from tests.inference_helpers.pods import start_pod, wait_ready


@pytest.mark.timeout(600)
async def test_a_problem_is_solved_end_to_end_on_the_real_tiny_model(nats_server, tmp_path):
    pod = start_pod(tmp_path / "pods", model="tiny", parallel=4, ctx=8192, threads=2)
    nc = await nats.connect(nats_server.url, **nats_server.connect_options())
    # Declared by the admin with the timings the services get below: they may check the bus, not change it.
    slow = dataclasses.replace(FAST, ack_wait_s=30.0, backoff_s=(30.0, 30.0, 30.0))
    await topology.declare(nc.jetstream(), slow)
    grpc_port = free_port()
    # Every process gets the same environment: NATS credentials, and the gateway's mTLS (server and client side).
    sec = nats_server.security
    secured = {**nats_server.env(), **sec.gateway_client_env("ceo"), **sec.gateway_server_env()}
    env = AgentEnv(nc=nc, nats_env=secured, gateway_addr=f"127.0.0.1:{grpc_port}",
                   archive_dir=tmp_path / "archive", tmp=tmp_path)
    try:
        await asyncio.to_thread(wait_ready, [pod], 120)
        base = env.env()
        # Long enough for a slow CPU: a worker must not lose its task while the model is still writing.
        extra = {"CONCLAVE_PODS": pod.url, "CONCLAVE_GRPC_PORT": str(grpc_port), "CONCLAVE_K_CAP": "256",
                 "CONCLAVE_CONTEXT_LENGTH": "2048", "CONCLAVE_ACK_WAIT_S": "30", "CONCLAVE_BACKOFF_S": "[30,30,30]",
                 "CONCLAVE_STEP_TIMEOUT_S": "300"}
        env.env = lambda: {**base, **extra}  # type: ignore[method-assign]
        for name in ("inference", *AGENT_SERVICES):
            await env.start_process(name)
        await env.wait_registered(1 + len(AGENT_SERVICES))
        problem = problem_pb2.Problem(id="tiny-1", kind=problem_pb2.PROBLEM_KIND_MATH, profile="math500",
                                      text="What is 3 + 4?", reference_answer="7")
        problem.limits.max_turns = 1
        result = await env.solve(problem, timeout_s=480)
        assert result.status == "ok", f"{result.error.code}: {result.error.message} ({result.stop_detail})"
        traj = await env.trajectory("tiny-1")
        counts = await env.count("tiny-1")
    finally:
        for procs in env.processes.values():
            for proc in procs:
                await proc.stop()
        await nc.close()
        pod.stop()
    assert result.status == "ok", result.error.message
    assert result.stop_reason in ("accepted", "max_turns", "ceo_stop")
    assert result.total_tokens > 0 and result.answer
    spoke = {agents_pb2.Role.Name(m.role) for m in traj.messages}
    assert {"ROLE_CEO", "ROLE_RECRUITER", "ROLE_SOLVER", "ROLE_CRITIC", "ROLE_EVALUATOR"} <= spoke
    assert all(m.call.completion_tokens > 0 and m.call.pod == pod.name for m in traj.messages)
    assert all(m.call.completion_tokens <= max(m.call.max_tokens, 1) for m in traj.messages)
    assert counts == {"results": 1, "trajectories": 1}
    kinds = [e.type for e in env.events["tiny-1"]]
    assert kinds[0] == "accepted" and {"decision", "recruited", "message", "evaluation"} <= set(kinds)
