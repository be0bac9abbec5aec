"""A Python client for publishing problems and waiting for their results, as users' programs would.

    async with await nats.connect(url) as nc:
        result = await solve(nc, problem, on_event=print)
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

from nats.aio.client import Client
from nats.js.errors import NotFoundError

from conclave.v1 import outcome_pb2, problem_pb2
from services.bus import subjects, topology
from services.bus.codec import PayloadError, decode
from services.bus.headers import CONTENT_TYPE, MSG_ID, PROTOBUF


class NoIntake(RuntimeError):
    """Nothing is listening on the submit subject."""


EventHandler = Callable[[outcome_pb2.ProgressEvent], Awaitable[None] | None]


async def existing_result(nc: Client, problem_id: str) -> outcome_pb2.Result | None:
    """The result already stored for this id (a resubmitted id is deduplicated and gets no new one)."""
    try:
        raw = await nc.jetstream().get_last_msg(topology.RESULTS.name, subjects.result(problem_id))
    except NotFoundError:
        return None
    result = decode(outcome_pb2.Result, raw.data, raw.headers)
    # An intake rejection of some other payload under this id is not this problem's answer.
    return None if result.status == "error" and result.error.code in ("bad_payload", "invalid_problem") else result


async def solve(
    nc: Client,
    problem: problem_pb2.Problem,
    *,
    on_event: EventHandler | None = None,
    timeout_s: float | None = None,
    reuse_existing: bool = True,
) -> outcome_pb2.Result:
    done: asyncio.Future[outcome_pb2.Result] = asyncio.get_running_loop().create_future()

    async def on_result(msg) -> None:
        if done.done():
            return
        if not msg.data and (msg.headers or {}).get("Status") == "503":
            # "No responders": nothing listens on the submit subject, so nobody took the problem.
            done.set_exception(NoIntake(f"no intake service answers on {subjects.PROBLEMS_SUBMIT}; "
                                        "is the stack up (`conclave up`)?"))
            return
        try:
            done.set_result(decode(outcome_pb2.Result, msg.data, msg.headers))
        except PayloadError as exc:
            done.set_exception(exc)

    async def on_progress(msg) -> None:
        if on_event is not None:
            try:
                event = decode(outcome_pb2.ProgressEvent, msg.data, msg.headers)
            except PayloadError:
                return  # events are best effort; the result is what counts
            maybe = on_event(event)
            if asyncio.iscoroutine(maybe):
                await maybe

    inbox = nc.new_inbox()
    subs = [await nc.subscribe(inbox, cb=on_result)]
    if subjects.valid_problem_id(problem.id):
        subs.append(await nc.subscribe(subjects.result(problem.id), cb=on_result))
        subs.append(await nc.subscribe(subjects.event(problem.id), cb=on_progress))
    try:
        # Subscribed first, then looked up: a result stored before the subscription is found, one published
        # after it is delivered. Looked up first, a resubmitted id whose run finished in between waited
        # forever (intake deduplicates it and sends nothing; seen when a cut `conclave eval` resumed).
        if reuse_existing and subjects.valid_problem_id(problem.id):
            found = await existing_result(nc, problem.id)
            if found is not None:
                return found
        await nc.publish(subjects.PROBLEMS_SUBMIT, problem.SerializeToString(), reply=inbox,
                         headers={CONTENT_TYPE: PROTOBUF, MSG_ID: problem.id})
        return await asyncio.wait_for(done, timeout_s)
    finally:
        for sub in subs:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
