"""Validation at the door: every rule gives a clear error; bad input gets a dead letter and never a crash."""

from __future__ import annotations

import asyncio
import json
import math

import pytest

from conclave.v1 import outcome_pb2, problem_pb2
from services.bus import subjects, topology
from services.bus.deadletter import MAX_KEPT_PAYLOAD
from services.bus.headers import CONTENT_TYPE, MSG_ID
from services.intake.service import IntakeService, IntakeSettings
from services.intake.validate import Limits, problem_errors
from services.runtime.lifecycle import run
from tests.agents.scripts import team
from tests.conftest import eventually


def good(**changes) -> problem_pb2.Problem:
    p = problem_pb2.Problem(id="v-1", kind=problem_pb2.PROBLEM_KIND_MATH, text="What is 2+3?", profile="math500")
    for key, value in changes.items():
        if key.startswith("limits_"):
            setattr(p.limits, key.removeprefix("limits_"), value)
        elif key == "metadata":
            p.metadata.update(value)
        else:
            setattr(p, key, value)
    return p


def test_a_good_problem_has_no_errors():
    assert problem_errors(good()) == []
    assert problem_errors(good(metadata={"profile.critic_rounds": "2", "profile.k_cap": "2048"})) == []


@pytest.mark.parametrize(("changes", "expected"), [
    ({"kind": 99}, "kind 99 is not a ProblemKind"),
    ({"kind": -1}, "kind -1 is not a ProblemKind"),
    ({"limits_deadline_s": math.nan}, "limits.deadline_s=nan"),
    ({"limits_deadline_s": math.inf}, "limits.deadline_s=inf"),
    ({"limits_deadline_s": -1.0}, "limits.deadline_s=-1.0"),
    ({"limits_max_turns": 2**31 - 1}, "limits.max_turns=2147483647 must be in 0..10"),
    ({"limits_max_total_tokens": 1}, "limits.max_total_tokens=1 must be in 1000..2000000"),
    ({"limits_max_total_tokens": 10**12}, "limits.max_total_tokens=1000000000000"),
    ({"metadata": {"profile.max_turns": "1000000"}}, "profile.max_turns=1000000 is out of range; allowed 1..10"),
    ({"metadata": {"profile.critic_rounds": "1000000"}}, "profile.critic_rounds=1000000 is out of range"),
    ({"metadata": {"profile.n_cap": "-5"}}, "profile.n_cap=-5 is out of range; allowed 1..8"),
    ({"metadata": {"profile.k_cap": "0"}}, "profile.k_cap=0 is out of range; allowed 256..131072"),
    ({"metadata": {"profile.n_min": "4", "profile.n_cap": "2"}}, "need 1 <= n_min <= initial_n <= n_cap"),
    ({"metadata": {"profile.critic_rounds": "many"}}, "is not a whole number"),
    ({"profile": "../../deploy/k8s/base/configmap"}, "is not a profile name"),
    ({"profile": "no-such-profile"}, "unknown profile 'no-such-profile'"),
])
def test_each_rule_gives_a_clear_error(changes, expected):
    errors = problem_errors(good(**changes))
    assert any(expected in e for e in errors), errors


def test_a_profile_name_with_a_path_never_reaches_the_file_system():
    errors = problem_errors(good(profile="../../deploy/k8s/base/configmap"))
    assert errors == ["profile '../../deploy/k8s/base/configmap' is not a profile name (letters, digits, _ and -, "
                      "at most 64)"]  # no keys of any YAML file in the message


def test_bounds_are_operator_settings(monkeypatch):
    monkeypatch.setenv("CONCLAVE_LIMIT_MAX_CRITIC_ROUNDS", "20")
    assert problem_errors(good(metadata={"profile.critic_rounds": "15"}), Limits()) == []


@pytest.fixture
async def intake(nats_server, bus):
    stop, started = asyncio.Event(), asyncio.Event()
    task = asyncio.create_task(run(IntakeService(IntakeSettings(**nats_server.settings_kwargs(), declare_bus=False)),
                                   stop=stop, started=started))
    await asyncio.wait_for(started.wait(), 10)
    yield
    stop.set()
    await asyncio.wait_for(task, 10)


async def _letters(js) -> list[outcome_pb2.DeadLetter]:
    info = await js.stream_info(topology.DEADLETTER.name)
    if not info.state.messages:
        return []
    return [outcome_pb2.DeadLetter.FromString((await js.get_msg(topology.DEADLETTER.name, s)).data)
            for s in range(info.state.first_seq, info.state.last_seq + 1)]


@pytest.mark.asyncio
async def test_bad_submissions_get_an_error_each_and_a_dead_letter_each(nc, bus, intake):
    bad = [good(kind=99), good(limits_deadline_s=math.inf), good(metadata={"profile.critic_rounds": "1000000"}),
           good(profile="../../etc/passwd"), good(limits_max_turns=2**31 - 1)]
    for p in bad:
        reply = await nc.request(subjects.PROBLEMS_SUBMIT, p.SerializeToString(),
                                 headers={CONTENT_TYPE: "application/protobuf"}, timeout=10)
        result = outcome_pb2.Result.FromString(reply.data)
        assert result.error.code == "invalid_problem", result
    # Over the size limit: a permanent error (not "retry"), and a dead letter that itself fits.
    huge = json.dumps({"id": "v-huge", "kind": "PROBLEM_KIND_MATH", "text": "x" * 9_000_000}).encode()
    reply = await nc.request(subjects.PROBLEMS_SUBMIT, huge, timeout=10)
    assert json.loads(reply.data)["error"]["code"] == "too_large"
    letters = await eventually(lambda: _at_least(bus, len(bad) + 1))
    assert [letter.error.code for letter in letters] == ["invalid_problem"] * len(bad) + ["too_large"]
    big = letters[-1]
    assert len(big.payload) == MAX_KEPT_PAYLOAD and "payload of 90000" in big.error.message
    info = await bus.stream_info(topology.PROBLEMS.name)
    assert info.state.messages == 0  # none of it was queued


async def _at_least(js, n: int):
    letters = await _letters(js)
    return letters if len(letters) >= n else None


@pytest.mark.asyncio
async def test_an_invalid_payload_under_a_live_id_leaves_that_problems_result_intact(agent_stack):
    victim = good(id="victim-1", reference_answer="5")
    async with agent_stack(team(), latency_s=0.2) as env:
        js = env.nc.jetstream()
        solving = asyncio.create_task(env.solve(victim))
        await env.wait_event("victim-1", "decision")
        # The poison: same id, invalid (kind 99), both through intake and straight onto the CEO's queue.
        poison = good(id="victim-1", kind=99)
        reply = await env.nc.request(subjects.PROBLEMS_SUBMIT, poison.SerializeToString(),
                                     headers={CONTENT_TYPE: "application/protobuf"}, timeout=10)
        assert outcome_pb2.Result.FromString(reply.data).error.code == "invalid_problem"
        await js.publish(subjects.PROBLEMS_ACCEPTED, poison.SerializeToString(), headers={MSG_ID: "poison-direct"})
        result = await solving
        counts = await env.count("victim-1")
        stored = outcome_pb2.Result.FromString(
            (await js.get_last_msg(topology.RESULTS.name, subjects.result("victim-1"))).data)
    assert result.status == "ok" and result.extracted_answer == "5"
    assert stored.status == "ok" and stored.stop_reason == "accepted"
    assert counts == {"results": 1, "trajectories": 1}


@pytest.mark.asyncio
async def test_a_full_problem_queue_answers_busy(nc, bus, intake):
    from dataclasses import replace

    from tests.conftest import FAST

    await topology.declare(bus, replace(FAST, problem_queue_limit=2))
    for i in range(2):  # accepted problems are answered later, by the CEO: no reply to wait for
        await nc.publish(subjects.PROBLEMS_SUBMIT, good(id=f"q-{i}").SerializeToString(),
                         headers={CONTENT_TYPE: "application/protobuf"})
    await eventually(lambda: _queued(bus, 2))
    reply = await nc.request(subjects.PROBLEMS_SUBMIT, good(id="q-2").SerializeToString(),
                             headers={CONTENT_TYPE: "application/protobuf"}, timeout=10)
    result = outcome_pb2.Result.FromString(reply.data)
    assert result.error.code == "busy" and "retry later" in result.error.message
    assert await _queued(bus, 2) and not await _queued(bus, 3)


async def _queued(js, n: int) -> bool:
    return (await js.stream_info(topology.PROBLEMS.name)).state.messages >= n
