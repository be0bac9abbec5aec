"""Tokens that are ready together leave the gateway as one message; nothing waits, nothing is lost."""

from __future__ import annotations

import asyncio

import pytest

from services.inference.coalesce import coalesce


class Usage:
    pass


async def burst(words: list[str], usage: Usage):
    for w in words:
        yield w
    yield usage


async def collect(stream) -> list:
    return [e async for e in stream]


async def test_a_burst_of_tokens_becomes_one_message_followed_by_the_usage():
    usage = Usage()
    out = await collect(coalesce(burst(["Two", " plus", " three", " is", " five."], usage)))
    assert out == ["Two plus three is five.", usage]


async def test_tokens_that_arrive_apart_are_not_held_back():
    async def slow():
        for w in ["a", "b", "c"]:
            yield w
            await asyncio.sleep(0.02)

    seen: list[tuple[str, float]] = []
    loop = asyncio.get_running_loop()
    async for piece in coalesce(slow()):
        seen.append((piece, loop.time()))
    assert [p for p, _ in seen] == ["a", "b", "c"]
    assert seen[1][1] - seen[0][1] >= 0.015  # each piece went out when it came, not at the end


async def test_an_error_after_some_text_reaches_the_caller_after_that_text():
    async def failing():
        yield "partial"
        raise RuntimeError("pod died")

    got: list[str] = []
    with pytest.raises(RuntimeError, match="pod died"):
        async for piece in coalesce(failing()):
            got.append(piece)
    assert got == ["partial"]


async def endless(closed: asyncio.Event):
    try:
        while True:
            yield "x"
            await asyncio.sleep(0.001)
    finally:
        closed.set()  # where the gateway aborts the pod's request


async def test_closing_the_stream_early_closes_the_source():
    closed = asyncio.Event()
    stream = coalesce(endless(closed))
    assert (await stream.__anext__()).startswith("x")
    await stream.aclose()
    assert closed.is_set()


async def test_cancelling_the_caller_closes_the_source():
    closed = asyncio.Event()

    async def caller():
        async for _ in coalesce(endless(closed)):
            pass

    task = asyncio.create_task(caller())
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert closed.is_set()


async def test_a_hold_joins_the_tokens_that_arrive_while_it_waits():
    """Under load (the servicer's hold > 0) the next message waits, and what arrived meanwhile goes as one."""
    gate = asyncio.Event()
    usage = Usage()

    async def apart():
        yield "a"
        await gate.wait()  # the rest comes only once the caller has taken "a" and started its hold
        for w in ["b", "c", "d"]:
            yield w
            await asyncio.sleep(0)  # apart: without a hold each would be a message of its own
        yield usage

    holds: list[float] = []

    def hold() -> float:
        gate.set()
        holds.append(0.2)
        return 0.2

    out = await collect(coalesce(apart(), hold))
    assert out == ["a", "bcd", usage]
    # Held after "a" only: never before the first message, and the usage ready with the last text is not held.
    assert holds == [0.2]


async def test_a_stream_that_ends_during_a_hold_ends_at_once():
    """The usage that closes a call is not kept waiting for tokens that will never come."""
    gate = asyncio.Event()
    usage = Usage()

    async def ends():
        yield "a"
        await gate.wait()
        yield usage

    def hold() -> float:
        gate.set()
        return 600.0

    out = await asyncio.wait_for(collect(coalesce(ends(), hold)), timeout=30)
    assert out == ["a", usage]


async def test_no_hold_when_it_says_zero():
    gate = asyncio.Event()

    async def apart():
        yield "a"
        await gate.wait()
        yield "b"

    def hold() -> float:
        gate.set()
        return 0.0

    assert await collect(coalesce(apart(), hold)) == ["a", "b"]


async def test_the_gateway_holds_only_from_stream_hold_from_streams():
    """Over real gRPC (the scripted model, tokens 5 ms apart): one stream below the threshold gets a message per
    token; with the threshold at one stream, the same call arrives in fewer messages, the text whole."""
    from services.inference.backends.scripted import ScriptedBackend, ScriptRule
    from tests.inference_helpers.gateway import chat, running_gateway

    words = " ".join(f"w{i}" for i in range(12))

    async def messages(**settings: object) -> list[str]:
        backend = ScriptedBackend([ScriptRule(response=words)], token_latency_s=0.005)
        async with running_gateway(pods=["scripted://a"], backend=backend, **settings) as gw:
            chunks, usage = await gw.generate(chat("say it", 64))
            assert gw.metric("conclave_inference_streams") == 0  # the gauge: none in flight any more
        assert "".join(chunks) == usage.raw_text == words
        return chunks

    apart = await messages(stream_hold_s=0.5, stream_hold_from=2)
    held = await messages(stream_hold_s=0.5, stream_hold_from=1)
    assert len(held) < len(apart)
    assert len(held) <= 3  # the first token at once, then what the half-second hold gathered
