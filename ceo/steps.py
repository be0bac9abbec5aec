"""Runs one protocol step: publish role tasks, collect their replies. Safe to repeat after a crash.

Task ids are deterministic ("<problem>/t<turn>-r<round>-<role>-<index>"), so a resumed CEO first reads
replies already in the REPLIES stream and only publishes what is still missing; JetStream drops a
re-published task inside the duplicate window.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError

from ceo.spans import StepSpans
from conclave.v1 import agents_pb2
from services.bus import subjects, topology
from services.bus.headers import MSG_ID

log = logging.getLogger(__name__)

ROLE_QUEUE = {
    agents_pb2.ROLE_RECRUITER: "recruiter",
    agents_pb2.ROLE_SOLVER: "solver",
    agents_pb2.ROLE_CRITIC: "critic",
    agents_pb2.ROLE_EXECUTOR: "executor",
    agents_pb2.ROLE_EVALUATOR: "evaluator",
    agents_pb2.ROLE_SINGLE: "single",
}


def task_id(problem_id: str, turn: int, round_: int, role: int, index: int = 0) -> str:
    return f"{problem_id}/t{turn}-r{round_}-{ROLE_QUEUE[role]}-{index}"


def step_of(tid: str) -> str:
    return tid.rsplit("/", 1)[-1]


class StepRunner:
    def __init__(self, nc: Client, js: JetStreamContext, problem_id: str, timeout_s: float, *,
                 resuming: bool) -> None:
        self._nc, self._js, self._pid, self._timeout = nc, js, problem_id, timeout_s
        # A fresh problem has no stored replies; only a resumed one must look before publishing.
        self._look_up_stored = resuming
        self._replies: dict[str, agents_pb2.RoleReply] = {}
        self._arrived = asyncio.Condition()
        self._sub = None
        self._spans = StepSpans()

    async def __aenter__(self) -> StepRunner:
        # Subscribe before publishing anything, so that no reply can slip past.
        self._sub = await self._nc.subscribe(subjects.replies_of(self._pid), cb=self._on_reply)
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
        async with self._arrived:
            self._replies[step_of(reply.task_id)] = reply
            self._spans.arrived(step_of(reply.task_id), reply)
            self._arrived.notify_all()

    async def _stored(self, step: str) -> agents_pb2.RoleReply | None:
        try:
            raw = await self._js.get_last_msg(topology.REPLIES.name, subjects.reply(self._pid, step))
        except NotFoundError:
            return None
        return agents_pb2.RoleReply.FromString(raw.data)

    async def run(self, tasks: list[agents_pb2.RoleTask]) -> list[agents_pb2.RoleReply]:
        steps = [step_of(t.task_id) for t in tasks]
        to_publish = []
        for task, step in zip(tasks, steps, strict=True):
            if step in self._replies:
                continue
            stored = await self._stored(step) if self._look_up_stored else None
            if stored is not None:
                self._replies[step] = stored
                continue
            to_publish.append(task)
        # Concurrent publishes: the critics of a round leave together, not one PubAck after another.
        await asyncio.gather(*(
            self._js.publish(subjects.task(ROLE_QUEUE[t.role]), t.SerializeToString(),
                             headers=self._spans.start(step_of(t.task_id), t, {MSG_ID: t.task_id}))
            for t in to_publish
        ))
        self._look_up_stored = False  # the step that was in flight at the crash is settled after this
        async with self._arrived:
            try:
                await asyncio.wait_for(
                    self._arrived.wait_for(lambda: all(s in self._replies for s in steps)), self._timeout
                )
            except TimeoutError:
                pass
        out = []
        for task, step in zip(tasks, steps, strict=True):
            reply = self._replies.get(step)
            if reply is None:
                reply = agents_pb2.RoleReply(task_id=task.task_id, problem_id=self._pid, role=task.role,
                                             turn=task.turn, round=task.round, index=task.index,
                                             persona=task.persona,
                                             error=f"no reply within {self._timeout:.0f}s")
            out.append(reply)
        self._spans.timed_out(steps)
        return out
