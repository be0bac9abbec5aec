"""The OpenAI-compatible door, driven by the official `openai` client over the real stack.

Real nats-server, intake, CEO and every agent service, the real gateway; the model is the scripted
backend (deterministic replies, named as such), so these are protocol tests of the door, not of a model.
"""

from __future__ import annotations

import asyncio
import contextlib
import os

import httpx
import openai
import pytest

from services.openai_door.service import build
from services.openai_door.settings import DoorSettings
from services.runtime.lifecycle import run
from tests.agents.scripts import team

pytestmark = pytest.mark.asyncio
KEY = "sk-test-door"


@contextlib.asynccontextmanager
async def door(nats_settings: dict, **settings):
    # The bus is declared by the test (fast timings, as the admin); the door need not check it.
    service = build(DoorSettings(**nats_settings, door_port=0, door_api_keys=(KEY,), drain_grace_s=2,
                                 log_json=True, declare_bus=False, **settings))
    stop, started = asyncio.Event(), asyncio.Event()
    task = asyncio.create_task(run(service, stop=stop, started=started))
    await asyncio.wait_for(started.wait(), 30)
    try:
        yield f"http://127.0.0.1:{service.port}/v1", service
    finally:
        stop.set()
        await task


async def test_the_openai_client_gets_the_teams_answer_with_every_agents_tokens(agent_stack, nats_server):
    async with agent_stack(team()) as env, door(env.nats_settings()) as (url, service):
        client = openai.AsyncOpenAI(base_url=url, api_key=KEY, max_retries=0)
        models = [m.id for m in (await client.models.list()).data]
        reply = await client.chat.completions.create(
            model="conclave-math500", messages=[{"role": "system", "content": "Be brief."},
                                                {"role": "user", "content": "What is 2+3?"}])
    assert "conclave-math500" in models and "conclave-business" in models and "conclave" in models
    assert reply.choices[0].message.content == "Two plus three is five, so the answer is \\boxed{5}."
    assert reply.choices[0].finish_reason == "stop" and reply.model == "conclave-math500"
    # usage counts every agent: CEO, recruiter, solver, two critics, evaluator.
    assert reply.usage.completion_tokens > 0 and reply.usage.prompt_tokens > reply.usage.completion_tokens
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + reply.usage.completion_tokens
    extra = reply.model_extra["conclave"]
    assert extra["stop_reason"] == "accepted" and extra["extracted_answer"] == "5"


async def test_streaming_sends_the_discussion_as_reasoning_then_the_answer_and_usage(agent_stack):
    async with agent_stack(team()) as env, door(env.nats_settings()) as (url, _):
        client = openai.AsyncOpenAI(base_url=url, api_key=KEY, max_retries=0)
        stream = await client.chat.completions.create(
            model="conclave-math500", messages=[{"role": "user", "content": "What is 2+3?"}], stream=True,
            stream_options={"include_usage": True})
        chunks = [c async for c in stream]
    reasoning = "".join((c.choices[0].delta.model_extra or {}).get("reasoning_content") or ""
                        for c in chunks if c.choices)
    content = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert "CEO continue: N=3" in reasoning and "critic" in reasoning and "→ agree" in reasoning
    assert content == "Two plus three is five, so the answer is \\boxed{5}."
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].usage is not None and chunks[-1].usage.total_tokens > 0


async def test_bad_requests_get_openai_errors_and_the_door_keeps_serving(agent_stack):
    async with agent_stack(team()) as env, door(env.nats_settings()) as (url, service):
        good = openai.AsyncOpenAI(base_url=url, api_key=KEY, max_retries=0)
        with pytest.raises(openai.AuthenticationError):
            await openai.AsyncOpenAI(base_url=url, api_key="wrong", max_retries=0).models.list()
        with pytest.raises(openai.NotFoundError) as unknown:
            await good.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}])
        with pytest.raises(openai.BadRequestError) as last_not_user:
            await good.chat.completions.create(model="conclave-math500",
                                               messages=[{"role": "assistant", "content": "hi"}])
        still = await good.chat.completions.create(model="conclave-math500",
                                                   messages=[{"role": "user", "content": "What is 2+3?"}])
        async with httpx.AsyncClient() as http:
            raw = await http.post(f"{url}/chat/completions", content=b"{not json",
                                  headers={"Authorization": f"Bearer {KEY}"})
            metrics = (await http.get(f"http://127.0.0.1:{service._rt.metrics_port}/metrics")).text
    assert "conclave-math500" in str(unknown.value)
    assert "last message must be a non-empty user message" in str(last_not_user.value)
    assert raw.status_code == 400 and raw.json()["error"]["code"] == "invalid_json"
    assert still.choices[0].message.content.endswith("\\boxed{5}.")
    assert 'conclave_door_requests_total{model="conclave-math500",outcome="ok",stream="false"} 1.0' in metrics
    assert 'outcome="unauthorized"' in metrics and 'outcome="model_not_found"' in metrics


async def test_without_keys_the_door_refuses_to_listen_beyond_loopback(nats_server):
    service = build(DoorSettings(**nats_server.settings_kwargs(), declare_bus=False, door_host="0.0.0.0", door_port=0,
                                 door_api_keys=()))
    with pytest.raises(SystemExit, match="CONCLAVE_DOOR_API_KEYS"):
        await run(service, stop=asyncio.Event())
    assert os.environ.get("CONCLAVE_DOOR_API_KEYS") is None


async def test_a_refused_problem_maps_to_400_when_it_must_change_and_503_when_it_may_come_again():
    from conclave.v1 import outcome_pb2
    from services.bus.error_codes import SubmitError
    from services.openai_door.translate import result_error

    def status(code: str) -> int:
        err = result_error(outcome_pb2.Result(problem_id="p", status="error", error=outcome_pb2.Error(code=code)))
        assert err is not None
        return err.status

    assert [status(c) for c in (SubmitError.INVALID_PROBLEM, SubmitError.BAD_PAYLOAD, SubmitError.TOO_LARGE)] == [400] * 3
    assert [status(c) for c in (SubmitError.BUSY, SubmitError.UNAVAILABLE)] == [503, 503]
    assert status("step_failed") == 502
