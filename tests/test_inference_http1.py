"""The gateway's small HTTP/1.1 streaming client, against scripted asyncio servers."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from services.inference.backends.http1 import Dechunker, Http1Pool, HttpError

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def read_request(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length"))
    return await reader.readexactly(length)


async def serve(handler: Handler) -> tuple[asyncio.AbstractServer, str]:
    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    return server, f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"


def chunked(*pieces: bytes) -> bytes:
    return b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in pieces) + b"0\r\n\r\n"


async def collect(body: AsyncIterator[bytes]) -> bytes:
    return b"".join([p async for p in body])


def test_dechunker_handles_any_split() -> None:
    wire = chunked(b"hello ", b"world", b"x" * 300)
    for cut in range(1, len(wire)):
        d = Dechunker()
        out = d.feed(wire[:cut]) + d.feed(wire[cut:])
        assert b"".join(out) == b"hello world" + b"x" * 300 and d.done, cut


async def test_streams_a_chunked_body_and_reuses_keepalive_connections() -> None:
    connections = 0

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        while True:
            try:
                body = await read_request(reader)
            except asyncio.IncompleteReadError:
                return
            writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + chunked(b"got ", body))
            await writer.drain()

    server, url = await serve(handler)
    pool = Http1Pool()
    try:
        for i in range(3):
            resp = await pool.post(url, "/x", b"req%d" % i)
            assert resp.status == 200
            assert await collect(resp.body()) == b"got req%d" % i
            await resp.aclose()
        assert connections == 1
    finally:
        await pool.close()
        server.close()


async def test_a_server_that_closes_after_each_response_is_not_offered_reused_connections() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + chunked(b"ok"))
        await writer.drain()
        writer.close()  # like llama.cpp after a streamed response, without saying so

    server, url = await serve(handler)
    pool = Http1Pool()
    try:
        for _ in range(5):
            resp = await pool.post(url, "/x", b"{}")
            assert await collect(resp.body()) == b"ok"
            await resp.aclose()  # handed back while the FIN may still be in flight
    finally:
        await pool.close()
        server.close()


async def test_error_bodies_and_refused_connections() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 12\r\nConnection: close\r\n\r\ntoo long ctx")
        await writer.drain()
        writer.close()

    server, url = await serve(handler)
    pool = Http1Pool(connect_timeout_s=1.0)
    try:
        resp = await pool.post(url, "/x", b"{}")
        assert resp.status == 400 and await resp.read(100) == b"too long ctx"
        await resp.aclose()
        server.close()
        await server.wait_closed()
        with pytest.raises(HttpError, match="connect"):
            await pool.post(url, "/x", b"{}")
    finally:
        await pool.close()


async def test_silence_longer_than_the_read_timeout_fails_the_stream() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nfirst\r\n")
        await writer.drain()
        await asyncio.sleep(5)

    server, url = await serve(handler)
    pool = Http1Pool(read_timeout_s=0.2)
    try:
        resp = await pool.post(url, "/x", b"{}")
        got = []
        with pytest.raises(TimeoutError):
            async for piece in resp.body():
                got.append(piece)
        assert got == [b"first"]
        await resp.aclose()
    finally:
        await pool.close()
        server.close()


async def test_extra_headers_reach_the_pod() -> None:
    """The gateway sends each attempt's traceparent, so a vLLM pod can continue the problem's trace."""
    seen: list[bytes] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        seen.append(head)
        length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length"))
        await reader.readexactly(length)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await writer.drain()

    server, url = await serve(handler)
    pool = Http1Pool()
    parent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    try:
        resp = await pool.post(url, "/v1/chat/completions", b"{}", headers={"traceparent": parent})
        assert await collect(resp.body()) == b"ok"
        await resp.aclose()
    finally:
        await pool.close()
        server.close()
    assert f"traceparent: {parent}\r\n".encode() in seen[0]


async def test_sse_streams_reuse_the_connection_when_the_body_end_follows_done() -> None:
    """The backend stops parsing at [DONE]; the chunked body's end (here 20 ms later, as a separate write) is
    still read, so the next stream reuses the connection instead of opening one per call."""
    from services.inference.admission import PodSlots
    from services.inference.backends.base import GenRequest, Message
    from services.inference.backends.openai_http import OpenAIHttpBackend
    from services.inference.pods import Pod

    connections = 0

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        while True:
            try:
                await read_request(reader)
            except asyncio.IncompleteReadError:
                return
            events = [b'data: {"choices":[{"delta":{"content":"hi"}}]}\n\n',
                      b'data: {"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":1}}\n\n', b"data: [DONE]\n\n"]
            writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + chunked(*events)[:-5])
            await writer.drain()
            await asyncio.sleep(0.02)
            writer.write(b"0\r\n\r\n")
            await writer.drain()

    server, url = await serve(handler)
    backend = OpenAIHttpBackend()
    pod = Pod(url=url, name="pod", slots=PodSlots(4, 4))
    try:
        for _ in range(3):
            chunks = [c async for c in backend.stream(GenRequest(model="m", messages=(Message("user", "q"),)), pod)]
            assert chunks[0].text == "hi" and chunks[-1].usage is not None
        assert connections == 1
    finally:
        await backend.close()
        server.close()
