"""The bus contract a user sees, over the real stack (real NATS, the gateway on the scripted backend).

JSON in → JSON out on the reply subject, the result subject and the events, with Content-Type headers and
zero values kept; the live view's facts (set-aside stop, per-critic verdicts) travel in the events.
"""

from __future__ import annotations

import asyncio
import json

import pytest

from conclave.v1 import agents_pb2, problem_pb2
from services.bus import subjects, topology
from services.bus.headers import CONTENT_TYPE, JSON, PROTOBUF
from services.client.solve import solve
from tests.agents.scripts import DISAGREE, WRONG, R, ceo, team

pytestmark = pytest.mark.asyncio


async def test_a_json_publisher_gets_json_results_and_events_with_zero_values(agent_stack):
    async with agent_stack(team(evaluator=[(R.ROLE_EVALUATOR, ".", WRONG)])) as env:
        events = []

        async def keep(msg) -> None:
            events.append(msg)

        sub = await env.nc.subscribe(subjects.event("json-1"), cb=keep)
        problem = {"id": "json-1", "kind": "PROBLEM_KIND_MATH", "text": "What is 2+3?", "profile": "math500",
                   "referenceAnswer": "6", "limits": {"maxTurns": 1}}
        reply = await env.nc.request(subjects.PROBLEMS_SUBMIT, json.dumps(problem).encode(), timeout=60)
        stored = await env.nc.jetstream().get_last_msg(topology.RESULTS.name, subjects.result("json-1"))
        await asyncio.sleep(0.2)  # the done event follows the result
        await sub.unsubscribe()
        # A protobuf client reading the stored result decodes it by its Content-Type.
        again = await solve(env.nc, problem_pb2.Problem(id="json-1"), timeout_s=10)

    assert reply.headers[CONTENT_TYPE] == JSON and stored.headers[CONTENT_TYPE] == JSON
    for raw in (reply.data, stored.data):
        result = json.loads(raw)
        assert result["correct"] == 0 and result["consensus"] is True and result["singleAgent"] is False
        assert result["extractedAnswer"] == "5" and result["turns"] == 1
    assert again.extracted_answer == "5" and again.correct == 0

    assert events and all(m.headers[CONTENT_TYPE] == JSON for m in events)
    decoded = [json.loads(m.data) for m in events]
    assert decoded[0]["type"] == "accepted"
    critics = [e for e in decoded if e["type"] == "message" and e["role"] == "ROLE_CRITIC"]
    assert critics and all(e["agree"] is True and e["fallback"] is False for e in critics)
    (done,) = [e for e in decoded if e["type"] == "done"]
    assert done["turn"] == 1  # as the Result says, though the loop had moved on to turn 2


async def test_a_protobuf_publisher_keeps_getting_protobuf(agent_stack):
    async with agent_stack(team()) as env:
        seen = []
        result = await solve(env.nc, problem_pb2.Problem(id="pb-1", kind=problem_pb2.PROBLEM_KIND_MATH,
                                                         text="What is 2+3?", profile="math500"),
                             on_event=seen.append, timeout_s=60)
        stored = await env.nc.jetstream().get_last_msg(topology.RESULTS.name, subjects.result("pb-1"))
    assert result.extracted_answer == "5" and stored.headers[CONTENT_TYPE] == PROTOBUF
    assert {e.type for e in seen} >= {"accepted", "decision", "message"}


async def test_a_stop_before_any_solution_is_published_as_set_aside_and_verdicts_as_parsed(agent_stack):
    script = team(ceo=[(R.ROLE_CEO, ".", ceo(stop=True))],
                  critic=[(R.ROLE_CRITIC, ".", DISAGREE)],
                  evaluator=[(R.ROLE_EVALUATOR, ".", WRONG)])
    async with agent_stack(script) as env:
        result = await env.solve(problem_pb2.Problem(id="aside-1", kind=problem_pb2.PROBLEM_KIND_MATH,
                                                     text="What is 2+3?", profile="math500",
                                                     metadata={"profile.critic_rounds": "1"}))
        events = env.events["aside-1"]
    decisions = [e for e in events if e.type == "decision"]
    assert "no solution yet" in decisions[0].set_aside  # turn 1: the CEO's stop is set aside
    assert decisions[1].set_aside == "" and result.stop_reason == "ceo_stop"  # turn 2: honoured
    critics = [e for e in events if e.type == "message" and e.role == agents_pb2.ROLE_CRITIC]
    assert critics and any(not e.agree for e in critics)
    assert not [e for e in events if e.type == "consensus"]
