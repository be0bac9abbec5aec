"""Publishing a problem from anywhere: JSON or binary in, errors back to the sender, nothing silent."""

from __future__ import annotations

import asyncio
import json

import pytest
from google.protobuf import json_format
from nats.js.errors import NotFoundError

from conclave.v1 import outcome_pb2, problem_pb2
from services.bus import subjects, topology
from services.bus.codec import PayloadError, decode
from services.bus.headers import CONTENT_TYPE
from services.intake.service import IntakeService, IntakeSettings
from services.runtime.lifecycle import run
from tests.conftest import eventually

PROBLEM_JSON = {
    "id": "p-json-1",
    "kind": "PROBLEM_KIND_MATH",
    "text": "What is 2+3?",
    "referenceAnswer": "5",
    "profile": "math500",
    "limits": {"maxTotalTokens": "20000", "maxTurns": 2},
    "metadata": {"source": "test"},
}


def test_json_and_binary_problems_decode_to_the_same_message():
    from_json = decode(problem_pb2.Problem, json.dumps(PROBLEM_JSON).encode())
    binary = from_json.SerializeToString()
    from_binary = decode(problem_pb2.Problem, binary, {CONTENT_TYPE: "application/protobuf"})
    from_labelled_json = decode(problem_pb2.Problem, json.dumps(PROBLEM_JSON).encode(), {CONTENT_TYPE: "application/json"})
    assert from_json == from_binary == from_labelled_json
    assert from_binary.limits.max_total_tokens == 20000 and from_binary.kind == problem_pb2.PROBLEM_KIND_MATH


def test_undecodable_payloads_raise_a_readable_error():
    with pytest.raises(PayloadError, match="invalid conclave.v1.Problem JSON"):
        decode(problem_pb2.Problem, b'{"id": 5, "kindd": 1}')
    with pytest.raises(PayloadError, match="unsupported Content-Type"):
        decode(problem_pb2.Problem, b"x", {CONTENT_TYPE: "text/csv"})
    with pytest.raises(PayloadError, match="empty payload"):
        decode(problem_pb2.Problem, b"")


@pytest.fixture
async def intake(nats_server, bus):
    stop, started = asyncio.Event(), asyncio.Event()
    settings = IntakeSettings(**nats_server.settings_kwargs(), declare_bus=False)
    task = asyncio.create_task(run(IntakeService(settings), stop=stop, started=started))
    await asyncio.wait_for(started.wait(), 10)
    yield
    stop.set()
    await asyncio.wait_for(task, 10)


async def accepted(js) -> list[problem_pb2.Problem]:
    info = await js.stream_info(topology.PROBLEMS.name)
    out = []
    for seq in range(info.state.first_seq, info.state.last_seq + 1) if info.state.messages else []:
        out.append(problem_pb2.Problem.FromString((await js.get_msg(topology.PROBLEMS.name, seq)).data))
    return out


async def test_a_valid_problem_is_queued_once_even_when_published_twice(nc, bus, intake):
    payload = json.dumps(PROBLEM_JSON).encode()
    await nc.publish(subjects.PROBLEMS_SUBMIT, payload)
    await nc.publish(subjects.PROBLEMS_SUBMIT, payload)
    await nc.flush()
    queued = await eventually(lambda: accepted(bus))
    await asyncio.sleep(0.3)
    assert [p.id for p in await accepted(bus)] == ["p-json-1"]
    assert queued[0].text == "What is 2+3?"


async def test_a_malformed_payload_gets_an_error_result_and_a_dead_letter_and_intake_keeps_serving(nc, bus, intake):
    reply = await nc.request(subjects.PROBLEMS_SUBMIT, b'{"id": "bad-1", "kind": "NOPE"', timeout=5)
    result = json_format.Parse(reply.data, outcome_pb2.Result())  # answered in the sender's encoding (JSON)
    assert result.status == "error" and result.error.code == "bad_payload"
    assert "invalid conclave.v1.Problem JSON" in result.error.message

    letters = await eventually(lambda: _letters(bus))
    assert letters[0].error.code == "bad_payload" and letters[0].payload.startswith(b'{"id": "bad-1"')

    invalid = problem_pb2.Problem(id="bad-2", text="")  # binary, but no kind and no text
    reply = await nc.request(subjects.PROBLEMS_SUBMIT, invalid.SerializeToString(),
                             headers={CONTENT_TYPE: "application/protobuf"}, timeout=5)
    result = outcome_pb2.Result.FromString(reply.data)
    assert result.error.code == "invalid_problem"
    assert "kind is required" in result.error.message and "text is empty" in result.error.message
    # Never stored as the id's result: conclave.results.<id> belongs to a problem accepted under that id.
    with pytest.raises(NotFoundError):
        await bus.get_last_msg(topology.RESULTS.name, subjects.result("bad-2"))

    # Still serving: a good problem goes through.
    await nc.publish(subjects.PROBLEMS_SUBMIT, json.dumps(PROBLEM_JSON).encode())
    assert [p.id for p in await eventually(lambda: accepted(bus))] == ["p-json-1"]
    assert len(await _letters(bus)) == 2


async def _letters(js):
    info = await js.stream_info(topology.DEADLETTER.name)
    if not info.state.messages:
        return []
    return [
        outcome_pb2.DeadLetter.FromString((await js.get_msg(topology.DEADLETTER.name, s)).data)
        for s in range(info.state.first_seq, info.state.last_seq + 1)
    ]
