"""A Python client for publishing problems and waiting for their results, as users' programs would.

    async with await nats.connect(url) as nc:
        result = await solve(nc, problem, on_event=print)
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Awaitable, Callable

from nats.aio.client import Client

from conclave.v1 import outcome_pb2, problem_pb2
from services.bus import subjects, topology
from services.bus.codec import PayloadError, decode
from services.bus.error_codes import REJECTED, RETRY_LATER
from services.bus.headers import CONTENT_TYPE, MSG_ID, PROTOBUF
from services.bus.lookup import last_message


class NoIntake(RuntimeError):
    """Nothing is listening on the submit subject."""


EventHandler = Callable[[outcome_pb2.ProgressEvent], Awaitable[None] | None]

log = logging.getLogger(__name__)

# A refusal that says "not now" (the queue full, JetStream slow) is sent again after these pauses (doubling,
# with jitter so that a burst of refused publishers does not come back at once), until the timeout.
RETRY_FIRST_S, RETRY_MAX_S = 0.5, 8.0


async def existing_result(nc: Client, problem_id: str, *, timeout_s: float = 5.0, attempts: int = 4,
                          backoff_s: float = 1.0) -> outcome_pb2.Result | None:
    """The result already stored for this id (a resubmitted id is deduplicated and gets no new one). A store
    too busy to answer is asked again (by default 4 tries of 5 s, 1, 2 and 4 s apart) before the TimeoutError
    is raised: a problem is never published without this look-up, or a finished run's id would wait for a
    result that never comes."""
    raw = await last_message(nc.jetstream(timeout=timeout_s), topology.RESULTS, subjects.result(problem_id),
                             attempts=attempts, backoff_s=backoff_s)
    if raw is None:
        return None
    result = decode(outcome_pb2.Result, raw.data, raw.headers)
    # An intake rejection of some other payload under this id is not this problem's answer.
    return None if result.status == "error" and result.error.code in REJECTED else result


async def solve(
    nc: Client,
    problem: problem_pb2.Problem,
    *,
    on_event: EventHandler | None = None,
    timeout_s: float | None = None,
    reuse_existing: bool = True,
) -> outcome_pb2.Result:
    """Publishes `problem` and returns its Result. A refusal for now (`busy`, `unavailable`) is published again
    after a pause, under the same id, until `timeout_s` runs out; then that refusal is returned. A rejection
    (a bad problem) and the problem's own Result are returned at once; TimeoutError when nothing came."""
    loop = asyncio.get_running_loop()
    waiting: list[asyncio.Future[outcome_pb2.Result]] = [loop.create_future()]  # one per publish

    async def on_result(msg) -> None:
        done = waiting[-1]
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
        deadline = None if timeout_s is None else loop.time() + timeout_s
        attempt = 0
        while True:
            attempt += 1
            await nc.publish(subjects.PROBLEMS_SUBMIT, problem.SerializeToString(), reply=inbox,
                             headers={CONTENT_TYPE: PROTOBUF, MSG_ID: problem.id})
            left = None if deadline is None else max(0.0, deadline - loop.time())
            result = await asyncio.wait_for(waiting[-1], left)
            if result.status != "error" or result.error.code not in RETRY_LATER:
                return result
            pause = min(RETRY_MAX_S, RETRY_FIRST_S * 2 ** (attempt - 1)) * random.uniform(0.5, 1.0)
            if deadline is not None and loop.time() + pause >= deadline:
                return result
            log.warning("problem %s not queued (%s, attempt %d): publishing it again in %.1fs",
                        problem.id, result.error.code, attempt, pause)
            # The run a timed-out PubAck started anyway may finish meanwhile: its Result lands here.
            waiting.append(loop.create_future())
            await asyncio.sleep(pause)
            if waiting[-1].done():
                return waiting[-1].result()
    finally:
        for sub in subs:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
