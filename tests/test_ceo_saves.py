"""The CEO saves a problem's state after every step without waiting for the write (it is sent once the next
step's tasks are out): the writes still land in order, each with the state of its own step, a state replaced
before it was sent is not written, and a write that fails fails the run (real nats-server)."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry

from ceo.loop import ProblemRun, RunConfig
from ceo.metrics import CeoMetrics
from ceo.state import ProblemState
from ceo.steps import StepTiming
from conclave.v1 import problem_pb2
from services.bus import topology
from services.protocol import profile as profiles

pytestmark = pytest.mark.asyncio


def problem_run(nc, js, kv, pid: str) -> ProblemRun:
    problem = problem_pb2.Problem(id=pid, kind=problem_pb2.PROBLEM_KIND_MATH, profile="aime2024", text="1+1?")
    cfg = RunConfig(step=StepTiming(timeout_s=5, warn_s=5, retry_s=0, recheck_s=5), k_cap=0, honour_stop=None,
                    default_model="", model_call_timeout_s=5)

    async def keepalive() -> None:
        return None

    return ProblemRun(nc=nc, js=js, kv=kv, llm=None, metrics=CeoMetrics(CollectorRegistry()), cfg=cfg,
                      problem=problem, profile=profiles.resolve(problem), reply_to="", as_json=False,
                      keepalive=keepalive, grader=None)


async def test_saves_that_do_not_wait_land_in_order_each_with_its_own_step(nc, bus):
    kv = await bus.key_value(topology.PROBLEM_STATE.bucket)
    run = problem_run(nc, bus, kv, "saves-1")
    st = ProblemState(problem_id="saves-1")
    for turn in range(1, 31):
        st.turn, st.plan = turn, f"plan of turn {turn}"
        run.save(st)
        run.write_saved_state()  # the next step's tasks are out
        st.plan = "changed by the next step"  # the state written is the one saved, not this
    await run.saved()
    stored = ProblemState.from_bytes((await kv.get("saves-1")).value)
    assert (stored.turn, stored.plan) == (30, "plan of turn 30")
    assert (await bus.stream_info(f"KV_{topology.PROBLEM_STATE.bucket}")).state.last_seq == 30


async def test_a_state_saved_before_the_next_one_is_sent_is_replaced_not_written(nc, bus):
    # Two steps in a row without tasks (the math profiles' execute) write their state once.
    kv = await bus.key_value(topology.PROBLEM_STATE.bucket)
    run = problem_run(nc, bus, kv, "saves-3")
    st = ProblemState(problem_id="saves-3")
    run.save(st)
    st.turn = 2
    run.save(st)
    assert (await bus.stream_info(f"KV_{topology.PROBLEM_STATE.bucket}")).state.last_seq == 0  # not yet sent
    await run.saved()
    assert ProblemState.from_bytes((await kv.get("saves-3")).value).turn == 2
    assert (await bus.stream_info(f"KV_{topology.PROBLEM_STATE.bucket}")).state.last_seq == 1


class FailingStore:
    """A KV whose writes are refused for good (not an outage: retrying does not hide it)."""

    async def put(self, key: str, value: bytes) -> int:
        raise RuntimeError("store refused the write")


async def test_a_save_that_fails_fails_the_run_at_the_next_save(nc, bus):
    run = problem_run(nc, bus, FailingStore(), "saves-2")
    st = ProblemState(problem_id="saves-2")
    run.save(st)
    with pytest.raises(RuntimeError, match="refused"):
        await run.saved()
    with pytest.raises(RuntimeError, match="refused"):
        run.save(st)  # the step after it does not go ahead on an unsaved state
