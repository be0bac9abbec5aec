"""Joins the text pieces of a stream that are ready at the same moment into one piece.

Each gRPC message costs the gateway about 95 µs of CPU to write and the client about as much to read.
A pod that streams at model speed hands over one token at a time, and coalescing changes nothing. But
when tokens pile up (a busy event loop under many streams, a backend that answers at once), writing
them one per message spends CPU on framing that the reader does not need. Like vLLM's stream interval,
but adaptive: by default nothing is held back to wait for more, only what is already there is joined.

Under load that is not enough: a pod at model speed hands each of many streams one token per engine step,
so every token would still cost one gRPC write (on the H100 one gateway core then capped the pod's 128-stream
throughput at ~0.83, docs/gpu.md). `hold` (the caller's, read after each message) makes the next message of
a stream wait that long after the last one, so that the tokens arriving meanwhile share it: fewer writes on
the gateway, fewer reads on the client, each token late by at most the hold. The first message never waits, nor does the end of a stream.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import TypeVar

T = TypeVar("T")

_END = object()


class _Failed:
    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


async def coalesce(events: AsyncIterator[str | T], hold: Callable[[], float] | None = None
                   ) -> AsyncIterator[str | T]:
    """`events` in order, with runs of ready `str` items joined; after each joined text, waits `hold()`
    seconds (when positive) before taking the next run. Closing or cancelling the consumer closes `events`
    (which aborts the pod's request) before this returns."""
    ready: asyncio.Queue[object] = asyncio.Queue()

    async def pump() -> None:
        try:
            async with contextlib.aclosing(events):  # type: ignore[type-var]
                async for event in events:
                    ready.put_nowait(event)
        except asyncio.CancelledError:
            raise
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer, which raises it
            ready.put_nowait(_Failed(exc))
        else:
            ready.put_nowait(_END)

    pumping = asyncio.create_task(pump())
    try:
        while True:
            batch = [await ready.get()]
            while not ready.empty():
                batch.append(ready.get_nowait())
            text: list[str] = []
            for item in batch:
                if type(item) is str:
                    text.append(item)
                    continue
                if text:
                    yield "".join(text)
                    text = []
                if item is _END:
                    return
                if isinstance(item, _Failed):
                    raise item.exc
                yield item  # type: ignore[misc]
            if text:
                yield "".join(text)
                if hold is not None:
                    pause = hold()
                    if pause > 0:
                        # A stream that ends meanwhile ends the hold: its last message is never late.
                        await asyncio.wait([pumping], timeout=pause)
    finally:
        pumping.cancel()
        await asyncio.wait([pumping])  # the pod's request is aborted before the call ends
