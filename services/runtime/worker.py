"""A JetStream work-queue consumer with the guarantees every Conclave worker needs.

- Pull-based, at most `concurrency` messages in flight per process. Up to `pull_requests` one-message pull
  requests wait on the server at once (each on a pull subscription of its own), so messages that arrive
  together (the critics of one round) are delivered together, not one request round trip after another;
  a pull request is only made for a message the worker has room for.
- Long work keeps its message alive with in-progress acks, so AckWait can stay short and a crashed
  worker's message is redelivered quickly.
- A `Rejected` error (bad input) is dead-lettered at once and answered by the handler; any other error is
  retried with the consumer's BackOff and dead-lettered on the last delivery, with its reason.
- Drain: stop fetching, let in-flight work finish within the grace period, then hand back (nak) what is
  left so another replica picks it up without waiting for AckWait.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from google.protobuf.message import Message
from nats.aio.msg import Msg
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js import JetStreamContext
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from services.bus.codec import PayloadError, decode
from services.bus.deadletter import DeadLetters
from services.bus.retry import TRANSIENT, retrying
from services.bus.topology import BusTiming, ConsumerSpec
from services.runtime.logs import problem_id_var

log = logging.getLogger(__name__)

# Pull requests a worker keeps waiting on the server (RuntimeSettings.pull_requests): enough for the
# largest group of messages the protocol sends together, the critics of a round (at most 3).
PULL_REQUESTS = 4


class Rejected(Exception):
    """The message can never succeed (malformed, invalid). It is dead-lettered, not retried."""

    def __init__(self, code: str, message: str, problem_id: str = "") -> None:
        super().__init__(message)
        self.code = code
        self.problem_id = problem_id


@dataclass
class WorkContext:
    """What a handler gets besides the message."""

    msg: Msg
    deliveries: int
    last_attempt: bool
    draining: asyncio.Event

    async def in_progress(self) -> None:
        await self.msg.in_progress()


Handler = Callable[[WorkContext], Awaitable[None]]
M = TypeVar("M", bound=Message)
TypedHandler = Callable[[WorkContext, M], Awaitable[None]]


def decoding(message_type: type[M], handler: TypedHandler[M]) -> Handler:
    """The one decode-and-reject opening of every typed consumer: the handler gets the decoded message;
    a payload that does not decode (codec.decode: protobuf or JSON by Content-Type) is dead-lettered as
    `bad_payload` and never retried."""

    async def handle(ctx: WorkContext) -> None:
        try:
            message = decode(message_type, ctx.msg.data, ctx.msg.headers)
        except PayloadError as exc:
            raise Rejected("bad_payload", str(exc)) from exc
        await handler(ctx, message)

    return handle


class WorkerMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.handled = Counter(
            "conclave_messages",
            "Work-queue messages handled, by consumer and outcome (ack, ack_lost, retry, rejected, dead, "
            "handed_back).",
            ["consumer", "outcome"],
            registry=registry,
        )
        self.in_flight = Gauge(
            "conclave_messages_in_flight", "Messages being worked on.", ["consumer"], registry=registry
        )
        self.seconds = Histogram(
            "conclave_message_seconds",
            "Time from fetch to ack, by consumer.",
            ["consumer"],
            registry=registry,
            buckets=(0.001, 0.005, 0.02, 0.1, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600),
        )


class JetStreamWorker:
    def __init__(
        self,
        js: JetStreamContext,
        spec: ConsumerSpec,
        handler: Handler,
        *,
        timing: BusTiming,
        concurrency: int,
        letters: DeadLetters,
        metrics: WorkerMetrics,
        pull_requests: int = PULL_REQUESTS,
    ) -> None:
        self._js = js
        self._spec = spec
        self._handler = handler
        self._timing = timing
        self._concurrency = max(1, concurrency)
        self._pull_requests = max(1, min(pull_requests, self._concurrency))
        self._letters = letters
        self._metrics = metrics
        self._draining = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        self._loop_tasks: list[asyncio.Task[None]] = []
        self._subs: list[JetStreamContext.PullSubscription] = []
        # Pull requests waiting on the server: with the tasks in flight, never more than `concurrency`.
        self._pulling = 0
        # Messages handled by this process, by outcome (ack, ack_lost, retry, rejected, dead, handed_back).
        self.handled: collections.Counter[str] = collections.Counter()

    @property
    def name(self) -> str:
        return self._spec.durable

    @property
    def in_flight(self) -> int:
        return len(self._tasks)

    def _count(self, outcome: str) -> None:
        self._metrics.handled.labels(self.name, outcome).inc()
        self.handled[outcome] += 1

    def snapshot(self) -> dict[str, object]:
        """What `conclave status` shows of this worker (through the micro STATS of its service)."""
        return {"consumer": self.name, "handled": dict(self.handled), "in_flight": self.in_flight}

    async def start(self) -> None:
        for i in range(self._pull_requests):
            sub = await self._js.pull_subscribe_bind(durable=self._spec.durable, stream=self._spec.stream)
            self._subs.append(sub)
            self._loop_tasks.append(asyncio.create_task(self._fetch_loop(sub), name=f"fetch-{self.name}-{i}"))

    async def _fetch_loop(self, sub: JetStreamContext.PullSubscription) -> None:
        drained = asyncio.ensure_future(self._draining.wait())
        try:
            await self._fetch_until_drained(sub, drained)
        finally:
            drained.cancel()

    async def _fetch_until_drained(self, sub: JetStreamContext.PullSubscription, drained: asyncio.Future[bool]) -> None:
        while not self._draining.is_set():
            if len(self._tasks) + self._pulling >= self._concurrency:
                # No room for another message: wait for a task to finish (there is one: this loop's own
                # request is not counted, and there are at most `concurrency` loops).
                await asyncio.wait({*self._tasks, drained}, return_when=asyncio.FIRST_COMPLETED)
                continue
            self._pulling += 1
            try:
                # One message per pull: nats-py's batched fetch can leave a message waiting on a
                # lingering pull request for up to its expiry (measured: +400 ms per problem).
                msgs = await sub.fetch(batch=1, timeout=1.0)
            except (TimeoutError, NatsTimeoutError):
                continue
            except Exception as exc:  # the connection is reconnecting: keep trying, say so
                if self._draining.is_set():
                    break
                log.warning("fetch failed on %s: %s", self.name, exc)
                await asyncio.sleep(0.5)
                continue
            finally:
                self._pulling -= 1
            for msg in msgs:
                if self._draining.is_set():
                    # Fetched during drain: hand it straight back for another replica.
                    await msg.nak()
                    self._count("handed_back")
                    continue
                task = asyncio.create_task(self._process(msg))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)

    async def _keepalive(self, msg: Msg) -> None:
        interval = max(0.1, self._timing.effective_ack_wait_s / 3)
        while True:
            await asyncio.sleep(interval)
            with contextlib.suppress(Exception):
                await msg.in_progress()

    async def _process(self, msg: Msg) -> None:
        meta = msg.metadata
        deliveries = meta.num_delivered
        last = deliveries >= self._timing.max_deliver
        ctx = WorkContext(msg=msg, deliveries=deliveries, last_attempt=last, draining=self._draining)
        started = time.perf_counter()
        keepalive = asyncio.create_task(self._keepalive(msg))
        self._metrics.in_flight.labels(self.name).inc()
        token = problem_id_var.set("")
        try:
            await self._handler(ctx)
        except Rejected as exc:
            await self._letters.record_msg(msg, code=exc.code, message=str(exc), problem_id=exc.problem_id)
            await msg.term()
            self._count("rejected")
        except asyncio.CancelledError:
            # Drain ran out of grace: give the message back so another replica takes it now.
            with contextlib.suppress(Exception):
                await msg.nak()
            self._count("handed_back")
            raise
        except Exception as exc:
            if last:
                await self._letters.record_msg(
                    msg, code="failed", message=f"failed on delivery {deliveries}: {exc!r}"
                )
                await msg.term()
                self._count("dead")
            else:
                log.warning("handler failed (delivery %d), will retry: %r", deliveries, exc, exc_info=exc)
                delay = self._timing.backoff_s[min(deliveries - 1, len(self._timing.backoff_s) - 1)] if self._timing.backoff_s else None
                await msg.nak(delay=delay)
                self._count("retry")
        else:
            # Acked through a NATS restart: an ack lost to the outage would redeliver finished work after
            # AckWait (the handlers are idempotent, but it costs a whole AckWait).
            try:
                await retrying(msg.ack_sync, "ack", give_up_s=self._timing.effective_ack_wait_s)
                self._count("ack")
            except TRANSIENT as exc:
                log.warning("could not ack after the work was done; it will be redelivered: %r", exc)
                self._count("ack_lost")
        finally:
            keepalive.cancel()
            problem_id_var.reset(token)
            self._metrics.in_flight.labels(self.name).dec()
            self._metrics.seconds.labels(self.name).observe(time.perf_counter() - started)

    async def drain(self, grace_s: float) -> None:
        self._draining.set()
        if self._loop_tasks:
            await asyncio.gather(*self._loop_tasks, return_exceptions=True)
        if self._tasks:
            log.info("draining %s: waiting for %d in-flight messages", self.name, len(self._tasks))
            _done, pending = await asyncio.wait(set(self._tasks), timeout=grace_s)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.gather(*pending, return_exceptions=True)
                log.warning("drain grace ran out; handed back %d messages", len(pending))
        for sub in self._subs:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
