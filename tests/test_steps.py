"""A step learns of every stored reply, whatever its live subscription saw (real nats-server)."""

from __future__ import annotations

import asyncio

import nats
import pytest
from prometheus_client import CollectorRegistry

from ceo.metrics import CeoMetrics
from ceo.steps import NO_REPLY, StepRunner, StepTiming, step_of, task_id
from conclave.v1 import agents_pb2
from services.bus import subjects, topology
from services.bus.headers import MSG_ID
from tests.conftest import eventually

pytestmark = pytest.mark.asyncio
R = agents_pb2


def evaluator_task(pid: str) -> agents_pb2.RoleTask:
    return agents_pb2.RoleTask(task_id=task_id(pid, 1, 1, R.ROLE_EVALUATOR), problem_id=pid, role=R.ROLE_EVALUATOR,
                               turn=1, round=1)


async def store_reply(js, task: agents_pb2.RoleTask, content: str) -> None:
    reply = agents_pb2.RoleReply(task_id=task.task_id, problem_id=task.problem_id, role=task.role, content=content)
    await js.publish(subjects.reply(task.problem_id, step_of(task.task_id)), reply.SerializeToString(),
                     headers={MSG_ID: task.task_id})


def value(registry: CollectorRegistry, name: str, **labels: str) -> float:
    return registry.get_sample_value(name, labels) or 0.0


async def test_a_reply_its_subscription_never_saw_is_read_from_the_store(nc, bus):
    # Stored before the runner subscribed: exactly what a reply published while the CEO reconnected looks
    # like to the runner. The old runner waited for it until its step timeout.
    task = evaluator_task("missed-1")
    await store_reply(bus, task, "Correctness: 1")
    registry = CollectorRegistry()
    timing = StepTiming(timeout_s=60, warn_s=30, retry_s=0, recheck_s=0.3, tick_s=0.1)
    async with StepRunner(nc, bus, "missed-1", timing, resuming=False, metrics=CeoMetrics(registry)) as steps:
        (reply,) = await asyncio.wait_for(steps.run([task]), 30)
    assert reply.content == "Correctness: 1" and not reply.error
    assert value(registry, "conclave_ceo_replies_recovered_total", how="recheck") == 1


async def test_a_reply_published_while_nats_restarts_is_consumed(nats_server, bus):
    ceo_nc = await nats.connect(nats_server.url, reconnect_time_wait=0.5, max_reconnect_attempts=-1,
                                **nats_server.connect_options("ceo"))
    js = ceo_nc.jetstream()
    task = evaluator_task("restart-1")
    # Rechecks only after a reconnect here: the reconnect is what must bring the reply in.
    timing = StepTiming(timeout_s=60, warn_s=30, retry_s=0, recheck_s=1000, tick_s=0.1)
    try:
        async with StepRunner(ceo_nc, js, "restart-1", timing, resuming=False) as steps:
            waiting = asyncio.create_task(steps.run([task]))
            await eventually(lambda: _queued(js, 1), timeout=10)  # the task is out; the runner waits
            nats_server.kill()
            nats_server.start()
            other = await nats.connect(nats_server.url, **nats_server.connect_options())
            await store_reply(other.jetstream(), task, "Correctness: 0")
            await other.close()
            (reply,) = await asyncio.wait_for(waiting, 30)
    finally:
        await ceo_nc.close()
    assert reply.content == "Correctness: 0" and not reply.error


async def test_a_step_without_a_reply_warns_republishes_and_then_fails_never_a_verdict(nc, bus):
    task = evaluator_task("silent-1")
    registry = CollectorRegistry()
    timing = StepTiming(timeout_s=2.0, warn_s=0.3, retry_s=0.8, recheck_s=0.2, tick_s=0.1)
    async with StepRunner(nc, bus, "silent-1", timing, resuming=False, metrics=CeoMetrics(registry)) as steps:
        (reply,) = await asyncio.wait_for(steps.run([task]), 30)
    assert reply.error.startswith(NO_REPLY) and not reply.HasField("evaluation")
    assert value(registry, "conclave_ceo_slow_steps_total", role="evaluator") == 1
    assert value(registry, "conclave_ceo_steps_waiting_slow") == 0
    assert value(registry, "conclave_ceo_step_timeouts_total", role="evaluator") == 1
    assert value(registry, "conclave_ceo_tasks_republished_total", role="evaluator") >= 1
    # The re-published copy is a new message (new id), so a task whose first copy was lost runs again.
    assert await _queued(bus, 2)


async def _queued(js, at_least: int) -> bool:
    info = await js.stream_info(topology.TASKS.name)
    return info.state.messages >= at_least



async def test_a_resumed_runner_reads_every_step_the_crashed_run_completed_and_publishes_only_the_next(nc, bus):
    # The CEO does not wait for a state save before the next step, so a crash can leave the stored state
    # several completed steps behind: the resumed runner must find all of them in REPLIES (none asked
    # twice, none waiting for a reply that was published before it subscribed), and publish the first
    # step that has no reply.
    pid = "lagging-1"
    solver = agents_pb2.RoleTask(task_id=task_id(pid, 1, 0, R.ROLE_SOLVER), problem_id=pid, role=R.ROLE_SOLVER, turn=1)
    critic = agents_pb2.RoleTask(task_id=task_id(pid, 1, 1, R.ROLE_CRITIC), problem_id=pid, role=R.ROLE_CRITIC,
                                 turn=1, round=1)
    await store_reply(bus, solver, "the solution")
    await store_reply(bus, critic, "[Agree]")
    timing = StepTiming(timeout_s=1.0, warn_s=30, retry_s=0, recheck_s=60, tick_s=0.1)
    async with StepRunner(nc, bus, pid, timing, resuming=True) as steps:
        (first,) = await asyncio.wait_for(steps.run([solver]), 30)
        (second,) = await asyncio.wait_for(steps.run([critic]), 30)
        assert (first.content, second.content) == ("the solution", "[Agree]")
        assert (await bus.stream_info(topology.TASKS.name)).state.messages == 0  # nothing asked again
        (third,) = await asyncio.wait_for(steps.run([evaluator_task(pid)]), 30)
    assert third.error.startswith(NO_REPLY)  # nobody answers here: it was published, and timed out
    assert (await bus.stream_info(topology.TASKS.name)).state.messages == 1
