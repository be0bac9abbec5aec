"""Runs one protocol step: publish role tasks, collect their replies. Safe to repeat after a crash.

Task ids are deterministic ("<problem>/t<turn>-r<round>-<role>-<index>"), so a resumed CEO first reads
replies already in the REPLIES stream and only publishes what is still missing; JetStream drops a
re-published task inside the duplicate window.

A reply can never be missed. Replies arrive on a core subscription (fast), but every reply is also
stored in REPLIES, and the store is what counts: the runner re-reads the stored replies of the steps it
still waits for after every reconnect of its connection (a reply published while it was away is there)
and every `recheck_s` while it waits (a safety net for anything else, such as a slow-consumer drop).
A step that waits longer than `warn_s` says so at WARNING and in `conclave_ceo_slow_steps`; one that
waits `retry_s` re-publishes its missing tasks under a retry id (their first copy may have been
dead-lettered); one that waits `timeout_s` gets error replies, which the loop treats as failed steps,
never as a verdict.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext

from ceo.metrics import CeoMetrics
from ceo.spans import StepSpans
from conclave.v1 import agents_pb2
from services.bus import subjects, topology
from services.bus.headers import MSG_ID
from services.bus.lookup import last_message
from services.bus.retry import TRANSIENT, retrying
from services.protocol.envelopes import reply_to
from services.protocol.roles import role_name

log = logging.getLogger(__name__)

# Prefix of the error text of a reply that never came (the loop fails the step on any error).
NO_REPLY = "no reply"


def task_id(problem_id: str, turn: int, round_: int, role: int, index: int = 0) -> str:
    return f"{problem_id}/t{turn}-r{round_}-{role_name(role)}-{index}"


def step_of(tid: str) -> str:
    return tid.rsplit("/", 1)[-1]


@dataclass(frozen=True)
class StepTiming:
    """How long a step waits, and what it does while it waits (CeoSettings has the defaults and documents
    each: step_timeout_s, step_warn_s, step_retry_s, reply_recheck_s)."""

    timeout_s: float
    warn_s: float
    retry_s: float
    recheck_s: float
    # How often the wait loop wakes to look for a reconnect; replies themselves wake it at once.
    tick_s: float = 0.5


class StepRunner:
    def __init__(self, nc: Client, js: JetStreamContext, problem_id: str, timing: StepTiming, *,
                 resuming: bool, metrics: CeoMetrics | None = None,
                 published: Callable[[], None] | None = None) -> None:
        self._nc, self._js, self._pid, self._t, self._m = nc, js, problem_id, timing, metrics
        # Called once a step's tasks are stored (the CEO then writes the state of the step before).
        self._published = published
        # A fresh problem has no stored replies; only a resumed one must look before publishing, and it
        # looks until a step is missing a reply: the crashed run got no further than that step. (Its
        # saves did not wait for their acknowledgements, so the state may lag several completed steps.)
        self._look_up_stored = resuming
        self._replies: dict[str, agents_pb2.RoleReply] = {}
        self._arrived = asyncio.Condition()
        self._sub = None
        self._spans = StepSpans()

    async def __aenter__(self) -> StepRunner:
        # Subscribe before publishing anything, so that no reply can slip past.
        self._sub = await retrying(lambda: self._nc.subscribe(subjects.replies_of(self._pid), cb=self._on_reply),
                                   "subscribe to replies", give_up_s=self._t.timeout_s)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._sub is not None:
            with contextlib.suppress(Exception):
                await self._sub.unsubscribe()

    async def _on_reply(self, msg: Msg) -> None:
        try:
            reply = agents_pb2.RoleReply.FromString(msg.data)
        except Exception:
            log.error("unreadable reply on %s", msg.subject)
            return
        if not subjects.reply_is_genuine(msg.subject, self._pid, step_of(reply.task_id)):
            log.error("reply for %s arrived on %s, not its step's subject; ignored", reply.task_id, msg.subject)
            return
        await self._keep(reply)

    async def _keep(self, reply: agents_pb2.RoleReply) -> None:
        async with self._arrived:
            # The first reply of a step wins: a retried task may answer again, and must change nothing.
            self._replies.setdefault(step_of(reply.task_id), reply)
            self._spans.arrived(step_of(reply.task_id), reply)
            self._arrived.notify_all()

    async def _stored(self, step: str) -> agents_pb2.RoleReply | None:
        raw = await last_message(self._js, topology.REPLIES, subjects.reply(self._pid, step), leader=True)
        if raw is None:
            return None
        reply = agents_pb2.RoleReply.FromString(raw.data)
        if not subjects.reply_is_genuine(raw.subject, self._pid, step_of(reply.task_id)):
            log.error("stored reply on %s claims step %s; ignored", raw.subject, reply.task_id)
            return None
        return reply

    async def _recheck(self, steps: list[str], why: str) -> None:
        """Reads the stored replies of the steps still missing; those found count as arrived."""
        missing = [s for s in steps if s not in self._replies]
        for step in missing:
            try:
                stored = await self._stored(step)
            except TRANSIENT:
                return  # still reconnecting; the next tick tries again
            if stored is not None:
                if self._m is not None:
                    self._m.replies_recovered.labels(why).inc()
                log.info("reply %s read from the store (%s)", step, why)
                await self._keep(stored)

    async def _publish(self, task: agents_pb2.RoleTask, msg_id: str, *, give_up_s: float) -> None:
        await retrying(
            lambda: self._js.publish(subjects.task(role_name(task.role)), task.SerializeToString(),
                                     headers=self._spans.headers(step_of(task.task_id), {MSG_ID: msg_id})),
            f"publish task {step_of(task.task_id)}",
            give_up_s=give_up_s,
        )

    async def run(self, tasks: list[agents_pb2.RoleTask], *, timeout_s: float | None = None
                  ) -> list[agents_pb2.RoleReply]:
        """The replies of `tasks`, in order. A task without a reply after `timeout_s` (default: the
        timing's) gets an error reply with FAILURE_REASON_TIMEOUT; on the way, a slow step warns after
        warn_s and re-publishes its missing tasks every retry_s."""
        timeout_s = self._t.timeout_s if timeout_s is None else timeout_s
        steps = [step_of(t.task_id) for t in tasks]
        to_publish = []
        for task, step in zip(tasks, steps, strict=True):
            if step in self._replies:
                continue
            stored = await retrying(lambda s=step: self._stored(s), "read stored reply", give_up_s=timeout_s) \
                if self._look_up_stored else None
            if stored is not None:
                self._replies[step] = stored
                continue
            to_publish.append(task)
        # Concurrent publishes: the critics of a round leave together, not one PubAck after another.
        for t in to_publish:
            self._spans.start(step_of(t.task_id), t)
        await asyncio.gather(*(self._publish(t, t.task_id, give_up_s=timeout_s) for t in to_publish))
        if self._published is not None:
            self._published()
        if to_publish:
            self._look_up_stored = False  # the step that was in flight at the crash: none came after it
        await self._wait(tasks, steps, timeout_s)
        out = []
        for task, step in zip(tasks, steps, strict=True):
            reply = self._replies.get(step)
            if reply is None:
                if self._m is not None:
                    self._m.step_timeouts.labels(role_name(task.role)).inc()
                log.error("no reply to %s within %.0fs", step, timeout_s)
                reply = reply_to(task, error=f"{NO_REPLY} within {timeout_s:.0f}s",
                                 failure=agents_pb2.FAILURE_REASON_TIMEOUT)
            out.append(reply)
        self._spans.timed_out(steps)
        return out

    async def _wait(self, tasks: list[agents_pb2.RoleTask], steps: list[str], timeout_s: float) -> None:
        t = self._t
        start = last_check = time.monotonic()
        reconnects = self._nc.stats.get("reconnects", 0)
        warned = False
        retries = 0
        try:
            while True:
                async with self._arrived:
                    if all(s in self._replies for s in steps):
                        return
                    # asyncio.timeout, not wait_for: no task per wait, so a reply wakes the step a turn
                    # of the event loop sooner.
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(t.tick_s):
                            await self._arrived.wait()
                    if all(s in self._replies for s in steps):
                        return
                now = time.monotonic()
                waited = now - start
                if waited >= timeout_s:
                    return
                seen = self._nc.stats.get("reconnects", 0)
                if seen != reconnects and self._nc.is_connected:
                    # The subscription is back; what was published while we were away is in the store.
                    reconnects, last_check = seen, now
                    await self._recheck(steps, "reconnect")
                elif now - last_check >= t.recheck_s:
                    last_check = now
                    await self._recheck(steps, "recheck")
                missing = [task for task, s in zip(tasks, steps, strict=True) if s not in self._replies]
                if not missing:
                    return
                if not warned and waited >= t.warn_s:
                    warned = True
                    if self._m is not None:
                        self._m.slow_steps.labels(role_name(missing[0].role)).inc()
                        self._m.waiting_slow.inc()
                    log.warning("step waiting %.0fs for %d replies: %s", waited, len(missing),
                                ", ".join(step_of(m.task_id) for m in missing))
                if t.retry_s and waited >= t.retry_s * (retries + 1):
                    retries += 1
                    # A new id: the first copy may be gone (dead-lettered), and its id is still in
                    # the duplicate window. Should both run, the store keeps one reply (same task id).
                    for task in missing:
                        if self._m is not None:
                            self._m.tasks_republished.labels(role_name(task.role)).inc()
                        log.warning("re-publishing task %s after %.0fs without a reply",
                                    step_of(task.task_id), waited)
                        # One attempt: in an outage the wait goes on (and keeps its timeout); the next
                        # retry_s tick tries again.
                        with contextlib.suppress(*TRANSIENT):
                            await self._publish(task, f"{task.task_id}#retry{retries}", give_up_s=0)
        finally:
            if warned and self._m is not None:
                self._m.waiting_slow.dec()
