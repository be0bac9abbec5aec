"""A problem that intake refuses for now (its queue full) is published again by the client until it is queued,
and its result still comes; a problem rejected for good is not sent again; a refusal that outlasts the timeout
is what the caller gets (real nats-server, real intake, the PROBLEMS queue bounded at one problem); a result
the client did not hear live is found by looking in RESULTS again while it waits.

On the GPU (docs/results.md, "The eighth lease") a vote lost a quarter of its samples, each counted as an empty
vote, to result look-ups that timed out before the sample was published; intake refused none there, but a
sample refused now would have been lost the same way."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import replace

import nats
import pytest

from conclave.v1 import outcome_pb2, problem_pb2
from services.bus import subjects, topology
from services.bus.error_codes import SubmitError
from services.bus.headers import CONTENT_TYPE, PROTOBUF
from services.bus.replies import store_result
from services.client.solve import solve
from services.intake.service import IntakeService, IntakeSettings
from services.runtime.lifecycle import run
from tests.conftest import FAST, eventually

pytestmark = pytest.mark.asyncio


@pytest.fixture
async def one_slot_queue(nats_server, nc):
    """The bus with room for one problem in PROBLEMS, and intake serving it: the JetStream context."""
    js = nc.jetstream()
    await topology.declare(js, replace(FAST, problem_queue_limit=1))
    stop, started = asyncio.Event(), asyncio.Event()
    settings = IntakeSettings(**nats_server.settings_kwargs(), declare_bus=False)
    task = asyncio.create_task(run(IntakeService(settings), stop=stop, started=started))
    await asyncio.wait_for(started.wait(), 10)
    yield js
    stop.set()
    await asyncio.wait_for(task, 10)


def math(problem_id: str, text: str = "What is 2+3?") -> problem_pb2.Problem:
    return problem_pb2.Problem(id=problem_id, kind=problem_pb2.PROBLEM_KIND_MATH, text=text, profile="math500")


async def queued_ids(js) -> list[str]:
    info = await js.stream_info(topology.PROBLEMS.name)
    if not info.state.messages:
        return []
    return [problem_pb2.Problem.FromString((await js.get_msg(topology.PROBLEMS.name, seq)).data).id
            for seq in range(info.state.first_seq, info.state.last_seq + 1)]


def retries(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if "publishing it again" in r.getMessage()]


async def test_a_problem_refused_while_the_queue_is_full_is_queued_once_there_is_room_and_answered(
        nc, one_slot_queue, caplog):
    js = one_slot_queue
    caplog.set_level(logging.WARNING, logger="services.client.solve")
    await nc.publish(subjects.PROBLEMS_SUBMIT, math("p-first").SerializeToString())  # fills the queue
    assert await eventually(lambda: queued_ids(js)) == ["p-first"]

    waiting = asyncio.ensure_future(solve(nc, math("p-second"), timeout_s=60))
    await eventually(lambda: asyncio.sleep(0, retries(caplog)), timeout=10)
    assert "p-second not queued (busy, attempt 1)" in retries(caplog)[0]
    assert not waiting.done()

    await js.purge_stream(topology.PROBLEMS.name)  # a CEO took the first one
    assert await eventually(lambda: queued_ids(js), timeout=30) == ["p-second"]
    # What the CEO does at the end of the run: the result, stored under the problem's id.
    await store_result(js, outcome_pb2.Result(problem_id="p-second", status="ok", answer="\\boxed{5}"))
    result = await asyncio.wait_for(waiting, 10)
    assert result.status == "ok" and result.answer == "\\boxed{5}"


async def test_a_refusal_that_outlasts_the_timeout_is_returned_and_a_rejection_is_never_sent_again(
        nc, one_slot_queue, caplog):
    js = one_slot_queue
    caplog.set_level(logging.WARNING, logger="services.client.solve")
    await nc.publish(subjects.PROBLEMS_SUBMIT, math("p-first").SerializeToString())
    await eventually(lambda: queued_ids(js))

    result = await solve(nc, math("p-late"), timeout_s=3)
    assert result.status == "error" and result.error.code == SubmitError.BUSY
    assert len(retries(caplog)) >= 2  # sent again (0.25–0.5 s, then 0.5–1 s, ...) until the time ran out

    caplog.clear()
    rejected = await solve(nc, math("p-empty", text=""), timeout_s=30)
    assert rejected.status == "error" and rejected.error.code == SubmitError.INVALID_PROBLEM
    assert retries(caplog) == []
    assert await queued_ids(js) == ["p-first"]


async def test_a_result_the_client_did_not_hear_is_found_by_looking_again_while_it_waits(plain_nats):
    # A real nats-server with a scripted intake that takes the problem and says nothing (as for a resubmitted
    # id, which it deduplicates) and a scripted store whose first direct get finds nothing (a replica that
    # lags) and whose later ones hold the result the run published while nobody listened.
    nc = await nats.connect(plain_nats)
    looked, submitted = [], []
    stored = outcome_pb2.Result(problem_id="p-1", status="ok", answer="\\boxed{5}").SerializeToString()

    async def store(msg):
        looked.append(msg.subject)
        if len(looked) == 1:
            await nc.publish(msg.reply, b"", headers={"Status": "404", "Description": "Message Not Found"})
        else:
            await nc.publish(msg.reply, stored, headers={"Nats-Stream": topology.RESULTS.name, "Nats-Sequence": "7",
                                                          "Nats-Subject": subjects.result("p-1"),
                                                          CONTENT_TYPE: PROTOBUF})

    async def intake(msg):
        submitted.append(msg.subject)

    await nc.subscribe(f"$JS.API.DIRECT.GET.{topology.RESULTS.name}.>", cb=store)
    await nc.subscribe(subjects.PROBLEMS_SUBMIT, cb=intake)
    try:
        result = await solve(nc, math("p-1"), timeout_s=20, recheck_s=0.3)
        assert result.status == "ok" and result.answer == "\\boxed{5}"
        assert submitted == [subjects.PROBLEMS_SUBMIT] and len(looked) == 2
        with pytest.raises(TimeoutError):  # a problem nobody answers, and no look-ups: the deadline holds
            await solve(nc, math("p-2"), timeout_s=1, recheck_s=0.3, reuse_existing=False)
        assert len(looked) == 2
    finally:
        await nc.close()
