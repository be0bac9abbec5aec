"""The bus contract: declaration, dedupe, redelivery, dead letters and drain, on a real nats-server."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys

import nats
from prometheus_client import CollectorRegistry

from conclave.v1 import outcome_pb2
from services.bus import subjects, topology
from services.bus.deadletter import DeadLetters, MaxDeliveriesWatcher
from services.bus.headers import MSG_ID
from services.bus.topology import ROLE_CONSUMERS, TASKS
from services.runtime.worker import JetStreamWorker, WorkerMetrics
from services.stack.natsd import NatsServer, find_binary, free_port, nats_answers
from tests.conftest import FAST, REPO, eventually

SOLVER = ROLE_CONSUMERS["solver"]


def make_worker(js, handler, concurrency=4, registry=None):
    reg = registry or CollectorRegistry()
    return JetStreamWorker(js, SOLVER, handler, timing=FAST, concurrency=concurrency,
                           letters=DeadLetters(js, reg), metrics=WorkerMetrics(reg))


async def dead_letters(js) -> list[outcome_pb2.DeadLetter]:
    info = await js.stream_info(topology.DEADLETTER.name)
    if not info.state.messages:
        return []
    letters = []
    for seq in range(info.state.first_seq, info.state.last_seq + 1):
        raw = await js.get_msg(topology.DEADLETTER.name, seq)
        letters.append(outcome_pb2.DeadLetter.FromString(raw.data))
    return letters


async def test_declaring_the_bus_twice_changes_nothing(nc):
    js = nc.jetstream()
    first = await topology.declare(js, FAST)
    assert first.created and not first.updated
    second = await topology.declare(js, FAST)
    assert second.created == [] and second.updated == []
    assert len(second.unchanged) == len(topology.STREAMS) + len(topology.CONSUMERS) + len(topology.BUCKETS)


async def test_declaring_waits_for_a_jetstream_that_does_not_answer_yet(tmp_path):
    # First a server without JetStream on the port (its API has no responders, as while a cluster elects
    # its leaders), then the real one on the same port: the declaration waits instead of failing.
    port = free_port()
    plain = await asyncio.create_subprocess_exec(str(find_binary()), "-a", "127.0.0.1", "-p", str(port),
                                                 stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
    server = NatsServer(store_dir=tmp_path / "js", port=port)
    try:
        await eventually(lambda: asyncio.sleep(0, nats_answers(f"nats://127.0.0.1:{port}")), timeout=10)
        client = await nats.connect(f"nats://127.0.0.1:{port}", max_reconnect_attempts=-1, reconnect_time_wait=0.2)
        declaring = asyncio.ensure_future(topology.declare(client.jetstream(), FAST, wait_s=30))
        await asyncio.sleep(1.5)
        assert not declaring.done()  # still waiting, not failed
        plain.terminate()
        await plain.wait()
        server.start()
        report = await asyncio.wait_for(declaring, 30)
        assert len(report.created) == len(topology.STREAMS) + len(topology.CONSUMERS) + len(topology.BUCKETS)
        await client.close()
    finally:
        with contextlib.suppress(ProcessLookupError):
            plain.kill()
        server.stop()


async def test_changed_timing_updates_consumers_in_place(nc):
    js = nc.jetstream()
    await topology.declare(js, FAST)
    slower = topology.BusTiming(ack_wait_s=2.0, max_deliver=3, backoff_s=(2.0, 2.0, 2.0), duplicate_window_s=60.0)
    report = await topology.declare(js, slower)
    assert not report.created
    assert f"consumer:{TASKS.name}/solver" in report.updated
    assert (await js.consumer_info(TASKS.name, "solver")).config.backoff == [2.0, 2.0, 2.0]


async def test_a_long_discussion_s_trajectory_fits_through_the_local_server(bus):
    # Several MB: more than nats-server's 1 MB default, within the TRAJECTORIES stream's 16 MB.
    record = os.urandom(6 * 1024 * 1024)
    ack = await bus.publish(subjects.trajectory("long-discussion"), record)
    stored = await bus.get_msg(topology.TRAJECTORIES.name, ack.seq)
    assert stored.data == record


async def test_a_duplicate_publish_is_dropped(bus):
    first = await bus.publish(subjects.task("solver"), b"one", headers={MSG_ID: "task-1"})
    again = await bus.publish(subjects.task("solver"), b"one", headers={MSG_ID: "task-1"})
    assert not first.duplicate and again.duplicate
    assert (await bus.stream_info(TASKS.name)).state.messages == 1


async def test_a_killed_worker_s_message_is_redelivered_to_another_worker(bus, nats_server):
    await bus.publish(subjects.task("solver"), b"precious", headers={MSG_ID: "p-1"})
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tests.helpers.hang_worker",
        cwd=REPO, stdout=asyncio.subprocess.PIPE, env={**os.environ, "PYTHONPATH": str(REPO), **nats_server.env()},
    )
    line = await asyncio.wait_for(proc.stdout.readline(), timeout=20)
    assert line.decode().startswith("got precious delivery=1")
    proc.send_signal(signal.SIGKILL)
    await proc.wait()

    got: list[tuple[bytes, int]] = []

    async def handler(ctx):
        got.append((ctx.msg.data, ctx.deliveries))

    worker = make_worker(bus, handler)
    await worker.start()
    await eventually(lambda: _true(got), timeout=15)
    await worker.drain(5)
    assert got == [(b"precious", 2)]
    assert (await bus.stream_info(TASKS.name)).state.messages == 0


async def _true(x):
    return bool(x)


async def test_exhausting_max_deliver_dead_letters_the_message_with_its_reason(bus):
    attempts = []

    async def always_fails(ctx):
        attempts.append(ctx.deliveries)
        raise RuntimeError("model pod unreachable")

    await bus.publish(subjects.task("solver"), b"doomed", headers={MSG_ID: "d-1"})
    worker = make_worker(bus, always_fails)
    await worker.start()
    letters = await eventually(lambda: dead_letters(bus), timeout=20)
    await worker.drain(5)
    assert attempts == [1, 2, 3]
    (letter,) = letters
    assert letter.payload == b"doomed"
    assert letter.stream == TASKS.name and letter.deliveries == 3
    assert letter.error.code == "failed" and "model pod unreachable" in letter.error.message
    assert (await bus.stream_info(TASKS.name)).state.messages == 0


async def test_a_message_never_acked_is_dead_lettered_by_the_advisory_watcher(bus, nc):
    reg = CollectorRegistry()
    letters = DeadLetters(bus, reg)
    watcher = MaxDeliveriesWatcher(nc, bus, letters, [TASKS.name])
    await watcher.start()
    await bus.publish(subjects.task("solver"), b"poison", headers={MSG_ID: "x-1"})
    sub = await bus.pull_subscribe_bind(durable="solver", stream=TASKS.name)
    seen = 0
    # A consumer that takes the message and dies every time (never acks): as crashing workers would.
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 20
    while seen < FAST.max_deliver and loop.time() < deadline:
        try:
            seen += len(await sub.fetch(1, timeout=1))
        except Exception:
            pass
    assert seen == FAST.max_deliver

    # JetStream notices the exhausted message when it next tries to deliver, i.e. while a worker pulls.
    async def pull_and_look():
        try:
            assert not await sub.fetch(1, timeout=0.5), "a message past MaxDeliver was delivered again"
        except TimeoutError:
            pass
        return await dead_letters(bus)

    (letter,) = await eventually(pull_and_look, timeout=10)
    await watcher.stop()
    assert letter.payload == b"poison" and letter.error.code == "max_deliver"
    assert "not acked after 3 deliveries" in letter.error.message
    assert (await bus.stream_info(TASKS.name)).state.messages == 0


async def test_graceful_drain_loses_no_in_flight_message(bus):
    done: list[bytes] = []

    async def slow(ctx):
        await asyncio.sleep(0.4)
        done.append(ctx.msg.data)

    for i in range(12):
        await bus.publish(subjects.task("solver"), f"m{i}".encode(), headers={MSG_ID: f"m{i}"})
    first = make_worker(bus, slow, concurrency=4)
    await first.start()
    await eventually(lambda: _true(first.in_flight), timeout=5)
    await first.drain(grace_s=5)  # in-flight work finishes and is acked
    finished_by_first = len(done)
    assert finished_by_first >= 1

    second = make_worker(bus, slow, concurrency=4)
    await second.start()
    await eventually(lambda: _true(len(done) == 12), timeout=20)
    await second.drain(5)
    assert sorted(done) == sorted(f"m{i}".encode() for i in range(12))  # each exactly once
    assert (await bus.stream_info(TASKS.name)).state.messages == 0


async def test_drain_hands_back_work_that_outlives_the_grace_period(bus):
    started, finished = [], []

    async def very_slow(ctx):
        started.append(ctx.deliveries)
        await asyncio.sleep(30)

    async def quick(ctx):
        finished.append((ctx.msg.data, ctx.deliveries))

    await bus.publish(subjects.task("solver"), b"long", headers={MSG_ID: "long-1"})
    first = make_worker(bus, very_slow)
    await first.start()
    await eventually(lambda: _true(started), timeout=5)
    await first.drain(grace_s=0.3)
    second = make_worker(bus, quick)
    await second.start()
    # Handed back with a nak: redelivered at once, not after AckWait.
    await eventually(lambda: _true(finished), timeout=3)
    await second.drain(5)
    assert finished == [(b"long", 2)]


async def test_a_worker_with_several_pull_requests_never_takes_more_than_it_has_room_for(bus):
    # Several pull requests wait on the server at once (so that the critics of a round arrive together),
    # but only for messages the worker can start: the rest stay in the stream for other replicas.
    release = asyncio.Event()
    seen: list[bytes] = []

    async def held(ctx):
        seen.append(ctx.msg.data)
        await release.wait()

    for i in range(5):
        await bus.publish(subjects.task("solver"), f"m{i}".encode(), headers={MSG_ID: f"room-{i}"})
    worker = JetStreamWorker(bus, SOLVER, held, timing=FAST, concurrency=2, pull_requests=4,
                             letters=DeadLetters(bus, CollectorRegistry()), metrics=WorkerMetrics(CollectorRegistry()))
    await worker.start()
    await eventually(lambda: _true(worker.in_flight == 2), timeout=5)
    await asyncio.sleep(0.5)  # room for a wrong worker to take a third
    info = await bus.consumer_info(TASKS.name, SOLVER.durable)
    assert (worker.in_flight, info.num_ack_pending, info.num_pending) == (2, 2, 3)
    release.set()
    await eventually(lambda: _true(len(seen) == 5), timeout=10)
    await worker.drain(5)
    assert sorted(seen) == [f"m{i}".encode() for i in range(5)]  # each exactly once
