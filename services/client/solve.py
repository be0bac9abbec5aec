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
from nats.errors import Error as NatsError

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
# While it waits, the client looks in RESULTS again this often: a result published while it was disconnected,
# one a lagging replica did not yet have at the first look-up (a direct get may be answered by any replica),
# or the earlier run of a resubmitted id (deduplicated, so nothing else answers) is found there.
RECHECK_S = 30.0


async def existing_result(nc: Client, problem_id: str, *, timeout_s: float = 5.0, attempts: int = 4,
                          backoff_s: float = 1.0) -> outcome_pb2.Result | None:
    """The result already stored for this id (a resubmitted id is deduplicated and gets no new one). A store
    too busy to answer is asked again (by default 4 tries of 5 s, 1, 2 and 4 s apart) before the TimeoutError
    is raised."""
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
    recheck_s: float = RECHECK_S,
) -> outcome_pb2.Result:
    """Publishes `problem` and returns its Result: the one already stored under its id (`reuse_existing`), or
    the one its run publishes. A refusal for now (`busy`, `unavailable`, or no intake answering after the first
    try) is published again after a pause, under the same id, until `timeout_s` (which covers everything here)
    runs out; then that refusal is returned. A rejection (a bad problem) is returned at once. NoIntake when no
    intake answers the first publish; TimeoutError when nothing came in time."""
    loop = asyncio.get_running_loop()
    deadline = None if timeout_s is None else loop.time() + timeout_s
    final: asyncio.Future[outcome_pb2.Result] = loop.create_future()  # the problem's Result, or a rejection
    refusals: asyncio.Queue[outcome_pb2.Result | NoIntake] = asyncio.Queue()  # "not now", one per publish

    def left() -> float | None:
        return None if deadline is None else max(0.0, deadline - loop.time())

    async def on_result(msg) -> None:
        if final.done():
            return
        if not msg.data and (msg.headers or {}).get("Status") == "503":
            # "No responders": nothing listens on the submit subject, so nobody took the problem.
            refusals.put_nowait(NoIntake(f"no intake service answers on {subjects.PROBLEMS_SUBMIT}; "
                                         "is the stack up (`conclave up`)?"))
            return
        try:
            result = decode(outcome_pb2.Result, msg.data, msg.headers)
        except PayloadError as exc:
            final.set_exception(exc)
            return
        if result.status == "error" and result.error.code in RETRY_LATER:
            refusals.put_nowait(result)
        else:
            final.set_result(result)

    async def on_progress(msg) -> None:
        if on_event is not None:
            try:
                event = decode(outcome_pb2.ProgressEvent, msg.data, msg.headers)
            except PayloadError:
                return  # events are best effort; the result is what counts
            maybe = on_event(event)
            if asyncio.iscoroutine(maybe):
                await maybe

    look = reuse_existing and subjects.valid_problem_id(problem.id)

    async def stored(attempts: int) -> outcome_pb2.Result | None:
        """The stored result, or None when there is none or the store did not answer in time."""
        try:
            return await asyncio.wait_for(existing_result(nc, problem.id, attempts=attempts), left())
        except (TimeoutError, NatsError) as exc:
            log.warning("result look-up of %s failed (%r); waiting for the live result", problem.id, exc)
            return None

    async def answer() -> outcome_pb2.Result | NoIntake:
        """The next thing that answers this publish: the Result, or a refusal. Looks in RESULTS every
        `recheck_s` meanwhile; TimeoutError at the deadline."""
        refused = asyncio.ensure_future(refusals.get())
        try:
            while True:
                wait = recheck_s if deadline is None else min(recheck_s, left() or 0.0)
                await asyncio.wait({final, refused}, timeout=wait, return_when=asyncio.FIRST_COMPLETED)
                if final.done():
                    return final.result()
                if refused.done():
                    return refused.result()
                if deadline is not None and loop.time() >= deadline:
                    raise TimeoutError(f"no result for problem {problem.id} within {timeout_s:.0f}s")
                if look and (found := await stored(1)) is not None:
                    return found
        finally:
            refused.cancel()

    inbox = nc.new_inbox()
    subs = [await nc.subscribe(inbox, cb=on_result)]
    if subjects.valid_problem_id(problem.id):
        subs.append(await nc.subscribe(subjects.result(problem.id), cb=on_result))
        subs.append(await nc.subscribe(subjects.event(problem.id), cb=on_progress))
    try:
        # Subscribed first, then looked up: a result stored before the subscription is found, one published
        # after it is delivered. Looked up first, a resubmitted id whose run finished in between waited
        # forever (intake deduplicates it and sends nothing; seen when a cut `conclave eval` resumed). A
        # look-up that fails is no reason not to publish: the look-ups while waiting find such a result.
        if look and (found := await stored(4)) is not None:
            return found
        attempt = 0
        while True:
            attempt += 1
            await nc.publish(subjects.PROBLEMS_SUBMIT, problem.SerializeToString(), reply=inbox,
                             headers={CONTENT_TYPE: PROTOBUF, MSG_ID: problem.id})
            got = await answer()
            if isinstance(got, NoIntake):
                if attempt == 1:
                    raise got  # no stack at all; later, an intake restarting: try again
                code = "no intake"
            elif got.status != "error" or got.error.code not in RETRY_LATER:
                return got
            else:
                code = got.error.code
            pause = min(RETRY_MAX_S, RETRY_FIRST_S * 2 ** (attempt - 1)) * random.uniform(0.5, 1.0)
            if deadline is not None and loop.time() + pause >= deadline:
                if isinstance(got, NoIntake):
                    raise got
                return got
            log.warning("problem %s not queued (%s, attempt %d): publishing it again in %.1fs",
                        problem.id, code, attempt, pause)
            # The run a timed-out PubAck started anyway may finish meanwhile.
            await asyncio.wait({final}, timeout=pause)
            if final.done():
                return final.result()
    finally:
        for sub in subs:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
