"""The client's wait for a result, against a real nats-server: a result is never missed between looking for a
stored one and listening for a new one."""

from __future__ import annotations

import asyncio

from conclave.v1 import outcome_pb2, problem_pb2
from services.bus.replies import store_result
from services.client import solve as client


async def test_a_result_stored_right_after_the_look_up_is_still_delivered(nc, bus, monkeypatch):
    """A resumed `conclave eval` resubmits an id still in flight: intake deduplicates it and answers nothing,
    so the result must come from the stream or the subscription. It finishing just after the look-up found
    nothing once meant a wait until the eval's timeout."""
    looked_up = asyncio.Event()
    real = client.existing_result

    async def then_finishes(nc_, problem_id, **tries):
        found = await real(nc_, problem_id, **tries)
        await store_result(bus, outcome_pb2.Result(problem_id=problem_id, status="ok", answer="\\boxed{7}"))
        looked_up.set()
        return found

    monkeypatch.setattr(client, "existing_result", then_finishes)
    # No intake listens: the submission itself gets no answer, as a deduplicated one gets none.
    async def ignore(msg) -> None:
        pass

    await nc.subscribe("conclave.problems.submit", cb=ignore)
    result = await client.solve(nc, problem_pb2.Problem(id="resumed-1"), timeout_s=10)
    assert looked_up.is_set() and result.answer == "\\boxed{7}"


async def test_a_result_stored_before_the_call_is_returned_without_resubmitting(nc, bus):
    await store_result(bus, outcome_pb2.Result(problem_id="done-1", status="ok", answer="\\boxed{3}"))
    submitted = []

    async def keep(msg) -> None:
        submitted.append(msg)

    await nc.subscribe("conclave.problems.submit", cb=keep)
    result = await client.solve(nc, problem_pb2.Problem(id="done-1"), timeout_s=10)
    await nc.flush()
    assert result.answer == "\\boxed{3}" and submitted == []
