"""NATS itself fails: the real nats-server is SIGKILLed and restarted on the same store with problems in
flight. Every problem still ends, with exactly one stored result and trajectory, and no live subscriber
sees a result twice. The model is the scripted backend (deterministic replies, 0.3 s per call)."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from conclave.v1 import agents_pb2, outcome_pb2, problem_pb2
from services.bus import subjects, topology
from services.bus.headers import MSG_ID
from tests.agents.scripts import team
from tests.conftest import eventually

pytestmark = pytest.mark.asyncio
N_PROBLEMS = 6


def problem(pid: str) -> problem_pb2.Problem:
    return problem_pb2.Problem(id=pid, kind=problem_pb2.PROBLEM_KIND_MATH, text="What is 2+3?", profile="math500",
                               reference_answer="5")


async def stored_results(js, pids: list[str]) -> dict[str, int]:
    info = await js.stream_info(topology.RESULTS.name, subjects_filter=f"{subjects.RESULTS_PREFIX}.>")
    counts = info.state.subjects or {}
    return {pid: counts.get(subjects.result(pid), 0) for pid in pids}


async def test_a_nats_restart_mid_step_loses_no_problem_and_duplicates_no_result(agent_stack, nats_server):
    pids = [f"chaos-{i}" for i in range(N_PROBLEMS)]
    delivered: dict[str, int] = {}
    async with agent_stack(team(), latency_s=0.3) as env:
        async def on_result(msg) -> None:
            key = (msg.headers or {}).get(MSG_ID, "")
            delivered[key] = delivered.get(key, 0) + 1

        watch = await env.nc.subscribe(f"{subjects.RESULTS_PREFIX}.>", cb=on_result)
        for pid in pids:
            await env.nc.publish(subjects.PROBLEMS_SUBMIT, problem(pid).SerializeToString())
        await env.nc.flush()
        # Kill NATS while the problems are in the middle of their steps (each takes 6 model calls).
        js = env.nc.jetstream()
        await eventually(lambda: _replies_stored(js, 3), timeout=30)
        nats_server.kill()
        await asyncio.sleep(1.0)
        nats_server.tie_to_parent = False  # the gateway's gRPC threads are busy: no Python in the child
        nats_server.start()

        done = await eventually(lambda: _all_stored(js, pids), timeout=90, interval=0.3)
        await asyncio.sleep(1.0)  # a duplicate publish would arrive now
        counts = await stored_results(js, pids)
        with contextlib.suppress(Exception):
            await watch.unsubscribe()
        results = {}
        for pid in pids:
            raw = await js.get_last_msg(topology.RESULTS.name, subjects.result(pid))
            results[pid] = outcome_pb2.Result.FromString(raw.data)
            traj = await env.trajectory(pid)
            steps = [(m.turn, m.round, m.role, m.index) for m in traj.messages]
            assert len(steps) == len(set(steps)), f"{pid}: a step was recorded twice"
            assert [m.role for m in traj.messages].count(agents_pb2.ROLE_EVALUATOR) == 1
    assert done
    assert counts == dict.fromkeys(pids, 1), counts
    assert {pid: (r.status, r.stop_reason, r.extracted_answer) for pid, r in results.items()} == \
        dict.fromkeys(pids, ("ok", "accepted", "5"))
    # Live subscribers may miss a result published while they reconnect; none may see one twice.
    assert all(n == 1 for n in delivered.values()), delivered
    assert set(delivered) <= {f"result:{pid}" for pid in pids}


async def _replies_stored(js, at_least: int) -> bool:
    info = await js.stream_info(topology.REPLIES.name)
    return info.state.messages >= at_least


async def _all_stored(js, pids: list[str]) -> bool:
    try:
        return all(n >= 1 for n in (await stored_results(js, pids)).values())
    except Exception:
        return False  # still reconnecting


async def test_an_evaluator_that_never_answers_ends_the_problem_as_an_error_not_as_incorrect(agent_stack):
    fast_steps = {"CONCLAVE_STEP_TIMEOUT_S": "3", "CONCLAVE_STEP_WARN_S": "1", "CONCLAVE_STEP_RETRY_S": "0",
                  "CONCLAVE_REPLY_RECHECK_S": "0.5"}
    async with agent_stack(team(), without=("evaluator",), env=fast_steps) as env:
        result = await env.solve(problem("no-evaluator-1"), timeout_s=60)
        traj = await env.trajectory("no-evaluator-1")
    assert result.status == "error" and result.stop_reason == "error"
    assert "ROLE_EVALUATOR failed: no reply within 3s" in result.stop_detail
    assert not traj.evaluations  # no verdict was made up
    assert result.turns == 1
