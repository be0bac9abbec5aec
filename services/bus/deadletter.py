"""Dead letters: a message that cannot be processed is recorded with its reason, never dropped silently.

Two paths lead here:
- a handler rejects a message (bad payload) or fails on its last allowed delivery: the worker records it;
- a message is never acked at all (its workers keep dying): JetStream emits a MAX_DELIVERIES advisory,
  and `MaxDeliveriesWatcher` copies the message out of its stream into the dead-letter stream.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError
from prometheus_client import CollectorRegistry, Counter

from conclave.v1 import outcome_pb2
from services.bus import subjects
from services.bus.headers import MSG_ID

log = logging.getLogger(__name__)

# A dead letter keeps at most this much of the payload (a 10 MB payload must not make its own dead letter
# fail); the message says how large the payload was.
MAX_KEPT_PAYLOAD = 64 * 1024


class DeadLetters:
    def __init__(self, js: JetStreamContext, registry: CollectorRegistry) -> None:
        self._js = js
        self.count = Counter(
            "conclave_dead_letters",
            "Messages moved to the dead-letter stream, by source stream and error code.",
            ["stream", "code"],
            registry=registry,
        )

    async def record(
        self,
        *,
        stream: str,
        subject: str,
        payload: bytes,
        headers: Mapping[str, str] | None,
        code: str,
        message: str,
        stream_seq: int = 0,
        deliveries: int = 0,
        problem_id: str = "",
    ) -> None:
        if len(payload) > MAX_KEPT_PAYLOAD:
            message = f"{message} [payload of {len(payload)} bytes; its first {MAX_KEPT_PAYLOAD} kept]"
            payload = payload[:MAX_KEPT_PAYLOAD]
        letter = outcome_pb2.DeadLetter(
            subject=subject,
            stream=stream,
            stream_seq=stream_seq,
            deliveries=deliveries,
            error=outcome_pb2.Error(code=code, message=message, subject=subject, problem_id=problem_id),
            payload=payload,
            headers={k: str(v) for k, v in (headers or {}).items()},
            at_unix_s=time.time(),
        )
        # Same source message, same dead letter: a retried record is deduplicated by JetStream.
        msg_id = f"dlq:{stream}:{stream_seq}" if stream_seq else f"dlq:{subject}:{time.time_ns()}"
        await self._js.publish(
            subjects.deadletter(stream or "core"), letter.SerializeToString(), headers={MSG_ID: msg_id}
        )
        self.count.labels(stream=stream or "core", code=code).inc()
        log.warning(
            "dead letter: %s", message, extra={"code": code, "subject": subject, "problem_id": problem_id}
        )

    async def record_msg(self, msg: Msg, *, code: str, message: str, problem_id: str = "") -> None:
        meta = msg.metadata
        await self.record(
            stream=meta.stream,
            subject=msg.subject,
            payload=msg.data,
            headers=msg.headers,
            code=code,
            message=message,
            stream_seq=meta.sequence.stream,
            deliveries=meta.num_delivered,
            problem_id=problem_id,
        )


class MaxDeliveriesWatcher:
    """Moves messages whose every delivery timed out (crashing workers) into the dead-letter stream."""

    def __init__(self, nc: Client, js: JetStreamContext, letters: DeadLetters, streams: list[str]) -> None:
        self._nc = nc
        self._js = js
        self._letters = letters
        self._streams = streams
        self._subs: list = []

    async def start(self) -> None:
        for stream in self._streams:
            # A queue group: one watcher in the fleet handles each advisory.
            sub = await self._nc.subscribe(
                subjects.max_deliveries_advisory(stream), queue="conclave-dlq", cb=self._on_advisory
            )
            self._subs.append(sub)

    async def stop(self) -> None:
        for sub in self._subs:
            await sub.unsubscribe()
        self._subs.clear()

    async def _on_advisory(self, msg: Msg) -> None:
        try:
            adv = json.loads(msg.data)
            stream, seq = adv["stream"], int(adv["stream_seq"])
            deliveries = int(adv.get("deliveries", 0))
            consumer = adv.get("consumer", "")
        except (ValueError, KeyError) as exc:
            log.error("unreadable max-deliveries advisory: %s", exc)
            return
        try:
            raw = await self._js.get_msg(stream, seq)
        except NotFoundError:
            return  # already acked, deleted or moved by another watcher
        await self._letters.record(
            stream=stream,
            subject=raw.subject,
            payload=raw.data or b"",
            headers=raw.headers,
            code="max_deliver",
            message=f"not acked after {deliveries} deliveries to consumer {consumer!r} (workers crashed or timed out)",
            stream_seq=seq,
            deliveries=deliveries,
        )
        try:
            await self._js.delete_msg(stream, seq)
        except NotFoundError:
            pass
