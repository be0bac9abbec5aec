"""The gateway against real llama.cpp pods (SmolLM2-135M on CPU), over real gRPC."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx
import pytest

from conclave.v1 import inference_pb2
from services.inference.router import HashRing
from tests.conftest import eventually
from tests.inference_helpers.gateway import chat, running_gateway
from tests.inference_helpers.pods import PodProcess, start_pod, wait_ready

# Talks long, so that only max_tokens or a cancel ends it (checked: it runs to 1500 tokens).
ENDLESS = "Once upon a time"


@pytest.fixture(scope="module")
def pods(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[PodProcess]]:
    log_dir = tmp_path_factory.mktemp("pods")
    started = [start_pod(log_dir), start_pod(log_dir)]
    try:
        wait_ready(started)
        yield started
    finally:
        for pod in started:
            pod.stop()


def key_for(pod_name: str, names: list[str], prefix: str = "problem") -> str:
    """A session key whose home on the ring is `pod_name`."""
    ring = HashRing(names, 128)
    for i in range(1000):
        key = f"{prefix}-{i}"
        if next(ring.walk(key)) == pod_name:
            return key
    raise AssertionError("no key found")


async def slots_busy(pod: PodProcess) -> int:
    async with httpx.AsyncClient() as client:
        slots = (await client.get(pod.url + "/slots", timeout=5)).json()
    return sum(1 for s in slots if s.get("is_processing"))


async def test_streams_chunks_then_usage(pods: list[PodProcess]) -> None:
    async with running_gateway([pods[0].url]) as gw:
        chunks, usage = await gw.generate(chat("Tell me about the sea.", 24, temperature=0.0))
        labels = {"model": "smollm2-135m-instruct", "role": "unspecified"}
        assert gw.metric("conclave_inference_completion_tokens_total", **labels) == usage.completion_tokens
        assert gw.metric("conclave_inference_prompt_tokens_total", **labels) == usage.prompt_tokens
        assert gw.metric("conclave_inference_ttft_seconds_count", model="smollm2-135m-instruct") == 1
    assert len(chunks) >= 3
    assert "".join(chunks).strip()
    assert usage.completion_tokens > 0 and usage.prompt_tokens > 0
    assert usage.finish_reason in ("stop", "length")
    assert usage.pod == pods[0].name
    assert usage.model == "smollm2-135m-instruct"
    assert usage.raw_text == "".join(chunks) == usage.visible_text
    assert 0 < usage.ttft_s <= usage.total_s


async def test_a_final_only_call_gets_one_message_with_the_whole_text(pods: list[PodProcess]) -> None:
    async with running_gateway([pods[0].url]) as gw:
        streamed, streamed_usage = await gw.generate(chat("Tell me about the sea.", 24, temperature=0.0))
        messages = [resp async for resp in gw.stub.Generate(
            chat("Tell me about the sea.", 24, temperature=0.0, final_only=True), timeout=60)]
        # The pod streamed to the gateway as before: its first token was timed for both calls.
        assert gw.metric("conclave_inference_ttft_seconds_count", model="smollm2-135m-instruct") == 2
    assert len(streamed) >= 3
    assert len(messages) == 1 and not messages[0].text
    usage = messages[0].usage
    assert usage.raw_text == usage.visible_text == "".join(streamed) == streamed_usage.raw_text
    assert usage.completion_tokens == streamed_usage.completion_tokens > 0
    assert 0 < usage.ttft_s <= usage.total_s


async def test_max_tokens_is_exact(pods: list[PodProcess]) -> None:
    async with running_gateway([pods[0].url]) as gw:
        _, usage = await gw.generate(chat("Write a very long essay about the history of Rome.", 7, temperature=0.0))
        _, raw_usage = await gw.generate(inference_pb2.GenerateRequest(prompt=ENDLESS, max_tokens=5, temperature=0.0))
    assert (usage.completion_tokens, usage.finish_reason) == (7, "length")
    assert (raw_usage.completion_tokens, raw_usage.finish_reason) == (5, "length")


async def test_stop_strings(pods: list[PodProcess]) -> None:
    async with running_gateway([pods[0].url]) as gw:
        _, free = await gw.generate(inference_pb2.GenerateRequest(prompt=ENDLESS, max_tokens=24, temperature=0.0))
        words = free.raw_text.split()
        assert len(words) >= 6, free.raw_text
        stop = words[4]
        chunks, stopped = await gw.generate(
            inference_pb2.GenerateRequest(prompt=ENDLESS, max_tokens=24, temperature=0.0, stop=[stop]))
    assert stopped.finish_reason == "stop"
    assert stopped.raw_text == "".join(chunks) == free.raw_text[: free.raw_text.find(stop)]
    assert stopped.completion_tokens < free.completion_tokens


async def test_count_tokens_matches_the_pods_usage(pods: list[PodProcess]) -> None:
    req = chat("How many tokens is this?", 1)
    async with running_gateway([pods[0].url]) as gw:
        counted = await gw.stub.CountTokens(inference_pb2.CountTokensRequest(messages=req.messages), timeout=10)
        _, usage = await gw.generate(req)
        models = await gw.stub.ListModels(inference_pb2.ListModelsRequest(), timeout=10)
    assert counted.tokens == usage.prompt_tokens
    assert models.default_model == "smollm2-135m-instruct"
    assert [m.id for m in models.models] == ["smollm2-135m-instruct"]
    assert list(models.models[0].pods) == [pods[0].name]


async def test_cancel_aborts_the_pods_request(pods: list[PodProcess]) -> None:
    pod = pods[0]
    async with running_gateway([pod.url]) as gw:
        call = gw.stub.Generate(inference_pb2.GenerateRequest(prompt=ENDLESS, max_tokens=1500, temperature=0.0))
        seen = 0
        async for resp in call:
            seen += bool(resp.text)
            if seen == 3:
                break
        assert await slots_busy(pod) == 1
        call.cancel()
        cancelled_at = time.monotonic()

        async def idle() -> bool:
            inflight = gw.metric("conclave_inference_in_flight", backend=pod.name)
            return inflight == 0 and await slots_busy(pod) == 0

        # Uncancelled, the pod would keep decoding for ~10 s.
        await eventually(idle, timeout=2.0)
        assert time.monotonic() - cancelled_at < 2.0
        assert gw.metric("conclave_inference_requests_total", model="smollm2-135m-instruct", role="unspecified",
                         outcome="cancelled") == 1
        started = time.monotonic()
        _, usage = await gw.generate(chat("Hi", 3))
        assert usage.completion_tokens >= 1
        assert time.monotonic() - started < 2.0


async def test_same_session_key_stays_on_its_pod(pods: list[PodProcess]) -> None:
    names = [p.name for p in pods]
    async with running_gateway([p.url for p in pods]) as gw:
        for home in names:
            key = key_for(home, names)
            seen = set()
            for _ in range(4):
                _, usage = await gw.generate(chat("Say one word.", 2, session_key=key))
                seen.add(usage.pod)
            assert seen == {home}


async def test_failover_before_first_token_and_ejection(pods: list[PodProcess], tmp_path: Path) -> None:
    doomed = start_pod(tmp_path)
    try:
        wait_ready([doomed])
        names = [doomed.name, pods[1].name]
        # Health probes rarely: the request itself must discover the dead pod.
        async with running_gateway([doomed.url, pods[1].url], health_interval_s=30.0) as gw:
            key = key_for(doomed.name, names)
            _, before = await gw.generate(chat("Say one word.", 2, session_key=key))
            assert before.pod == doomed.name
            doomed.kill()
            _, usage = await gw.generate(chat("Say one word.", 2, session_key=key))
            assert usage.pod == pods[1].name
            assert usage.completion_tokens >= 1
            assert gw.metric("conclave_inference_retries_total", backend=doomed.name) == 1
            assert gw.metric("conclave_inference_pod_healthy", backend=doomed.name) == 0
            # Ejected: the next call goes straight to the live pod, without another retry.
            _, again = await gw.generate(chat("Say one word.", 2, session_key=key))
            assert again.pod == pods[1].name
            assert gw.metric("conclave_inference_retries_total", backend=doomed.name) == 1
    finally:
        doomed.kill()


async def test_admission_rejects_beyond_limit_and_queue(pods: list[PodProcess]) -> None:
    async with running_gateway([pods[0].url], pod_max_inflight=1, pod_queue_limit=0) as gw:
        first = gw.stub.Generate(inference_pb2.GenerateRequest(prompt=ENDLESS, max_tokens=300, temperature=0.0))
        async for resp in first:
            if resp.text:
                break
        results = await asyncio.gather(*(gw.generate(chat("Hi", 2)) for _ in range(2)), return_exceptions=True)
        first.cancel()
    for res in results:
        assert isinstance(res, grpc.aio.AioRpcError), res
        assert res.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert res.details() == ("all 1 pods are at their limit of 1 in-flight + 0 queued requests; retry later")
    assert gw.metric("conclave_inference_rejections_total", reason="admission") == 2


async def test_admission_queues_within_its_bound(pods: list[PodProcess]) -> None:
    async with running_gateway([pods[0].url], pod_max_inflight=1, pod_queue_limit=1) as gw:
        first = asyncio.create_task(gw.generate(inference_pb2.GenerateRequest(prompt=ENDLESS, max_tokens=40)))
        await eventually(lambda: _async(gw.metric("conclave_inference_in_flight", backend=pods[0].name) == 1))
        queued = asyncio.create_task(gw.generate(chat("Hi", 2)))
        await eventually(lambda: _async(gw.metric("conclave_inference_queue_depth", backend=pods[0].name) == 1))
        with pytest.raises(grpc.aio.AioRpcError) as rejected:
            await gw.generate(chat("Hi", 2))
        assert rejected.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "1 in-flight + 1 queued" in (rejected.value.details() or "")
        (_, u1), (_, u2) = await asyncio.gather(first, queued)
    assert u1.completion_tokens == 40 and u2.completion_tokens >= 1


async def _async(value: bool) -> bool:
    return value
