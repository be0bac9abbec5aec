"""A small server-sent-events reader for OpenAI-style streams: yields the payload of each `data:` line."""

from __future__ import annotations

from collections.abc import AsyncIterator

DONE = b"[DONE]"


class StreamError(Exception):
    """The server sent an `error:` event (llama.cpp does this for failures after the headers)."""


async def data_events(raw: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    buf = bytearray()
    async for piece in raw:
        buf += piece
        if b"\r" in piece:
            buf[:] = buf.replace(b"\r\n", b"\n")
        while True:
            end = buf.find(b"\n\n")
            if end < 0:
                break
            event = bytes(buf[:end])
            del buf[: end + 2]
            for line in event.split(b"\n"):
                if line.startswith(b"data:"):
                    yield line[5:].strip()
                elif line.startswith(b"error:"):
                    raise StreamError(line[6:].strip().decode(errors="replace"))
    if buf.strip().startswith(b"data:"):
        yield bytes(buf.strip()[5:]).strip()
