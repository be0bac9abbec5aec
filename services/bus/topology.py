"""The one declaration of Conclave's JetStream topology: streams, consumers and KV buckets.

`declare(js, timing)` creates or updates all of it idempotently; every service calls it at start-up, so
the topology a process expects is the topology it gets. Timing knobs (AckWait, MaxDeliver, BackOff) come
from `BusTiming`, which tests shorten and operators can tune.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from enum import Enum

from nats.js import JetStreamContext
from nats.js.api import (
    AckPolicy,
    ConsumerConfig,
    DiscardPolicy,
    KeyValueConfig,
    RetentionPolicy,
    StorageType,
    StreamConfig,
)
from nats.js.errors import BadRequestError, NotFoundError

from services.bus import subjects
from services.bus.retry import retrying
from services.protocol.roles import WORKER_ROLES

log = logging.getLogger(__name__)

MiB = 1024 * 1024
DAY_S = 24 * 3600.0


@dataclass(frozen=True)
class BusTiming:
    """Redelivery timing of work consumers."""

    # How long a worker may hold a message without acking or sending in-progress acks. With a BackOff,
    # JetStream uses its first step as AckWait, so `effective_ack_wait_s` is what really applies.
    ack_wait_s: float = 30.0
    max_deliver: int = 5
    # Delay before each redelivery (len <= max_deliver). A worker that crashes is retried after these.
    # The first step is also the AckWait: it bounds how long a delivery lost in a NATS restart (or held by
    # a SIGKILLed worker) waits to come again. benchmarks/chaos.py, two NATS restarts: 1.60x the no-fault
    # wall time with 30 s, 1.07x with 10 s. Keepalives go every third of it.
    backoff_s: tuple[float, ...] = (10.0, 60.0, 120.0, 300.0)
    # Publishes with a Nats-Msg-Id already seen within this window are dropped.
    duplicate_window_s: float = 600.0
    # Copies of each stream and bucket in a NATS cluster (3 survives one server down); 1 on one server.
    replicas: int = 1
    # Problems the PROBLEMS queue holds at most (waiting or running); past it intake answers `busy`
    # (the stream discards new messages), so no publisher can queue without bound.
    problem_queue_limit: int = 10_000

    @property
    def effective_ack_wait_s(self) -> float:
        return self.backoff_s[0] if self.backoff_s else self.ack_wait_s


@dataclass(frozen=True)
class StreamSpec:
    name: str
    subjects: tuple[str, ...]
    retention: RetentionPolicy
    max_age_s: float = 0.0
    max_msg_size: int = 1 * MiB
    description: str = ""
    # Bounded by BusTiming.problem_queue_limit (discard new).
    bounded_queue: bool = False


@dataclass(frozen=True)
class ConsumerSpec:
    stream: str
    durable: str
    filter_subject: str
    description: str = ""
    max_ack_pending: int = 1000


@dataclass(frozen=True)
class BucketSpec:
    bucket: str
    description: str
    history: int = 1
    ttl_s: float = 0.0



PROBLEMS = StreamSpec(
    name="PROBLEMS",
    subjects=(subjects.PROBLEMS_ACCEPTED,),
    retention=RetentionPolicy.WORK_QUEUE,
    description="Validated problems waiting for, or held by, a CEO replica.",
    bounded_queue=True,
)
TASKS = StreamSpec(
    name="TASKS",
    subjects=(f"{subjects.TASKS_PREFIX}.*",),
    retention=RetentionPolicy.WORK_QUEUE,
    max_msg_size=4 * MiB,
    description="Role work queues, one subject per role.",
)
REPLIES = StreamSpec(
    name="REPLIES",
    subjects=(f"{subjects.REPLIES_PREFIX}.>",),
    retention=RetentionPolicy.LIMITS,
    max_age_s=2 * DAY_S,
    max_msg_size=4 * MiB,
    description="Role replies per problem step; a resumed CEO re-reads them.",
)
RESULTS = StreamSpec(
    name="RESULTS",
    subjects=(f"{subjects.RESULTS_PREFIX}.>",),
    retention=RetentionPolicy.LIMITS,
    max_age_s=7 * DAY_S,
    description="Final results, one per problem.",
)
TRAJECTORIES = StreamSpec(
    name="TRAJECTORIES",
    subjects=(f"{subjects.TRAJECTORIES_PREFIX}.>",),
    retention=RetentionPolicy.LIMITS,
    max_age_s=30 * DAY_S,
    max_msg_size=16 * MiB,
    description="Full discussion records for the archive and the trainer.",
)
DEADLETTER = StreamSpec(
    name="DEADLETTER",
    subjects=(f"{subjects.DEADLETTER_PREFIX}.>",),
    retention=RetentionPolicy.LIMITS,
    max_age_s=30 * DAY_S,
    max_msg_size=8 * MiB,
    description="Messages that could not be processed, with the reason.",
)
STREAMS: tuple[StreamSpec, ...] = (PROBLEMS, TASKS, REPLIES, RESULTS, TRAJECTORIES, DEADLETTER)

CEO_CONSUMER = ConsumerSpec(
    stream=PROBLEMS.name,
    durable="ceo",
    filter_subject=subjects.PROBLEMS_ACCEPTED,
    description="CEO replicas share the problem queue.",
    max_ack_pending=256,
)
ROLE_CONSUMERS: dict[str, ConsumerSpec] = {
    role: ConsumerSpec(
        stream=TASKS.name,
        durable=role,
        filter_subject=subjects.task(role),
        description=f"{role} service replicas share this queue.",
    )
    for role in WORKER_ROLES
}
ARCHIVER_CONSUMER = ConsumerSpec(
    stream=TRAJECTORIES.name,
    durable="archiver",
    filter_subject=f"{subjects.TRAJECTORIES_PREFIX}.>",
    description="The archiver writes every trajectory to disk.",
)
CONSUMERS: tuple[ConsumerSpec, ...] = (CEO_CONSUMER, *ROLE_CONSUMERS.values(), ARCHIVER_CONSUMER)

PROBLEM_STATE = BucketSpec(
    bucket="conclave_problem_state",
    description="CEO state per problem, updated after each step; a resuming replica reads it.",
    ttl_s=7 * DAY_S,
)
TOKEN_LEDGER = BucketSpec(
    bucket="conclave_token_ledger",
    description="Per-problem token ceilings: reserved and committed tokens.",
    ttl_s=7 * DAY_S,
)
BUCKETS: tuple[BucketSpec, ...] = (PROBLEM_STATE, TOKEN_LEDGER)


def stream_config(spec: StreamSpec, timing: BusTiming) -> StreamConfig:
    return StreamConfig(
        name=spec.name,
        description=spec.description,
        subjects=list(spec.subjects),
        retention=spec.retention,
        storage=StorageType.FILE,
        discard=DiscardPolicy.OLD if spec.retention == RetentionPolicy.LIMITS else DiscardPolicy.NEW,
        max_age=spec.max_age_s or None,
        max_msg_size=spec.max_msg_size,
        max_msgs=timing.problem_queue_limit if spec.bounded_queue else None,
        duplicate_window=timing.duplicate_window_s,
        allow_direct=True,
        num_replicas=timing.replicas,
    )


def consumer_config(spec: ConsumerSpec, timing: BusTiming) -> ConsumerConfig:
    backoff = list(timing.backoff_s[: timing.max_deliver]) or None
    return ConsumerConfig(
        durable_name=spec.durable,
        description=spec.description,
        ack_policy=AckPolicy.EXPLICIT,
        ack_wait=timing.effective_ack_wait_s,
        max_deliver=timing.max_deliver,
        backoff=backoff,
        filter_subject=spec.filter_subject,
        max_ack_pending=spec.max_ack_pending,
    )


@dataclass
class DeclareReport:
    created: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)


def _same_stream(have: StreamConfig, want: StreamConfig) -> bool:
    keys = ("subjects", "retention", "max_age", "max_msg_size", "duplicate_window", "discard", "description",
            "num_replicas", "max_msgs")
    return all(_norm(getattr(have, k)) == _norm(getattr(want, k)) for k in keys)


def _same_consumer(have: ConsumerConfig, want: ConsumerConfig) -> bool:
    keys = ("ack_wait", "max_deliver", "backoff", "filter_subject", "max_ack_pending", "description")
    return all(_norm(getattr(have, k)) == _norm(getattr(want, k)) for k in keys)


def _norm(value: object) -> object:
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, list):
        return [_norm(v) for v in value]
    if value in (None, 0, 0.0, "", -1):  # -1: the server's "unlimited"
        return None
    if isinstance(value, float):
        return round(value, 3)
    return value


async def declare(js: JetStreamContext, timing: BusTiming, *, wait_s: float = 30.0) -> DeclareReport:
    """Create or update every stream, consumer and bucket; a second call changes nothing.

    Its reads (stream, consumer and bucket info, which every service may make) are retried, for up to
    `wait_s` in all, while JetStream does not answer: a server still starting, a cluster electing its leaders
    (seen in benchmarks/chaos.py's cluster mode: a service started then exited on a timed-out read). Its
    writes are not: with security on only the admin may make them, and a refusal arrives as a timeout."""

    deadline = time.monotonic() + wait_s  # one wait for the whole declaration, not one per read

    def read(op, what: str):  # type: ignore[no-untyped-def]
        return retrying(op, what, give_up_s=max(0.0, deadline - time.monotonic()))

    report = DeclareReport()
    for spec in STREAMS:
        want = stream_config(spec, timing)
        try:
            info = await read(lambda s=spec.name: js.stream_info(s), f"read stream {spec.name}")
        except NotFoundError:
            await js.add_stream(want)
            report.created.append(f"stream:{spec.name}")
            continue
        if _same_stream(info.config, want):
            report.unchanged.append(f"stream:{spec.name}")
        else:
            await js.update_stream(want)
            report.updated.append(f"stream:{spec.name}")
    for cspec in CONSUMERS:
        want_c = consumer_config(cspec, timing)
        name = f"consumer:{cspec.stream}/{cspec.durable}"
        try:
            cinfo = await read(lambda c=cspec: js.consumer_info(c.stream, c.durable), f"read consumer {name}")
        except NotFoundError:
            await js.add_consumer(cspec.stream, want_c)
            report.created.append(name)
            continue
        if _same_consumer(cinfo.config, want_c):
            report.unchanged.append(name)
        else:
            await js.add_consumer(cspec.stream, want_c)
            report.updated.append(name)
    for bspec in BUCKETS:
        name = f"kv:{bspec.bucket}"
        try:
            await read(lambda b=bspec.bucket: js.key_value(b), f"read bucket {bspec.bucket}")
            report.unchanged.append(name)
        except (NotFoundError, BadRequestError):
            await js.create_key_value(
                KeyValueConfig(
                    replicas=timing.replicas,
                    bucket=bspec.bucket,
                    description=bspec.description,
                    history=bspec.history,
                    ttl=bspec.ttl_s or None,
                    storage=StorageType.FILE,
                )
            )
            report.created.append(name)
    if report.created or report.updated:
        log.info("bus declared", extra={"declared_new": report.created, "declared_changed": report.updated})
    return report
