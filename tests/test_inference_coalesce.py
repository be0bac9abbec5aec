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
