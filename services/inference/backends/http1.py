"""A minimal HTTP/1.1 client for the one hot request of the gateway: POST, then stream the response body.

Why not httpx here: measured on the CPU pod, httpx takes ~800 us from send to response headers and
~70 us per streamed event in its own layers (httpcore, h11, anyio); this client takes ~150 us and a few
us. That difference is most of the time-to-first-token the gateway adds, so the streaming path uses
this, and everything else (health, models, tokenize) keeps httpx.

Scope: plain HTTP/1.1 (or TLS), Content-Length request bodies, chunked / Content-Length / until-close
response bodies, idle keep-alive connections per pod. A pod that closes its connections after each
streamed response (llama.cpp does) is noticed and no longer offered reused connections.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from urllib.parse import urlsplit

_READ_SIZE = 65536
_MAX_HEADER = 64 * 1024


class HttpError(Exception):
    """A connection-level failure: refused, reset, closed early, silent for too long."""


@dataclass(frozen=True)
class Origin:
    host: str  # for connect(): no brackets around IPv6
    port: int
    authority: str  # for the Host header
    tls: bool

    @classmethod
    def parse(cls, url: str) -> Origin:
        parts = urlsplit(url)
        tls = parts.scheme == "https"
        port = parts.port or (443 if tls else 80)
        return cls(parts.hostname or "127.0.0.1", port, parts.netloc, tls)


@dataclass
class _Conn:
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    idle_since: float = 0.0

    def usable(self, now: float, expiry_s: float) -> bool:
        return not (self.reader.at_eof() or self.writer.is_closing() or now - self.idle_since > expiry_s)

    def close(self) -> None:
        self.writer.close()


@dataclass
class _OriginState:
    idle: list[_Conn] = field(default_factory=list)
    # False once the server showed it closes connections after a response: then we stop offering them.
    reuse: bool = True


class Dechunker:
    """Incremental `Transfer-Encoding: chunked` decoder."""

    __slots__ = ("_buf", "_need", "done")

    def __init__(self) -> None:
        self._buf = bytearray()
        self._need = -1  # bytes left of the current chunk's data (+2 for its CRLF); -1: reading a size line
        self.done = False

    def feed(self, data: bytes) -> list[bytes]:
        buf = self._buf
        buf += data
        out: list[bytes] = []
        while not self.done:
            if self._need < 0:
                end = buf.find(b"\r\n")
                if end < 0:
                    break
                size = int(bytes(buf[:end]).split(b";", 1)[0], 16)
                del buf[: end + 2]
                if size == 0:
                    self.done = True  # trailers, if any, are ignored
                    break
                self._need = size + 2
            if len(buf) < self._need:
                break
            out.append(bytes(buf[: self._need - 2]))
            del buf[: self._need]
            self._need = -1
        return out


class StreamResponse:
    def __init__(self, pool: Http1Pool, origin: Origin, conn: _Conn, status: int, headers: dict[str, str],
                 leftover: bytes, read_timeout_s: float) -> None:
        self._pool = pool
        self._origin = origin
        self._conn = conn
        self.status = status
        self.headers = headers
        self._leftover = leftover
        self._read_timeout_s = read_timeout_s
        self._complete = False
        self._closed = False
        self._dechunker: Dechunker | None = None

    async def _raw(self) -> AsyncIterator[bytes]:
        if self._leftover:
            yield self._leftover
            self._leftover = b""
        reader = self._conn.reader
        loop = asyncio.get_running_loop()
        timeout = self._read_timeout_s
        while True:
            # One timer per read would cost more than the read; a watchdog checks for silence instead.
            data = await _read_with_watchdog(reader, loop, timeout)
            if not data:
                return
            yield data

    async def body(self) -> AsyncIterator[bytes]:
        """The de-framed body, piece by piece as it arrives."""
        if "chunked" in self.headers.get("transfer-encoding", ""):
            dechunker = self._dechunker = Dechunker()
            async for data in self._raw():
                for piece in dechunker.feed(data):
                    yield piece
                if dechunker.done:
                    self._complete = True
                    return
            raise HttpError("connection closed inside a chunked body")
        length = self.headers.get("content-length")
        if length is not None:
            left = int(length)
            if left == 0:
                self._complete = True
                return
            async for data in self._raw():
                left -= len(data)
                yield data[: len(data) + min(0, left)]
                if left <= 0:
                    self._complete = True
                    return
            raise HttpError("connection closed before the body's end")
        async for data in self._raw():
            yield data

    async def read(self, limit: int) -> bytes:
        out = bytearray()
        async for piece in self.body():
            out += piece
            if len(out) >= limit:
                break
        return bytes(out[:limit])

    async def settle(self, timeout_s: float) -> None:
        """For a caller that stopped reading once it had what it needs (an SSE stream's `[DONE]`): reads the
        chunked body's end if it is there or comes within `timeout_s` (whatever precedes it is dropped), so that
        aclose() returns the connection to the pool instead of closing it. Without this every stream cost the
        gateway and the pod a new connection."""
        d = self._dechunker
        if self._complete or self._closed or d is None or self.headers.get("connection", "").lower() == "close":
            return
        if not d.done:
            try:
                async with asyncio.timeout(timeout_s):
                    while not d.done:
                        data = await self._conn.reader.read(_READ_SIZE)
                        if not data:
                            return
                        d.feed(data)
            except (OSError, TimeoutError, ValueError):
                return
        self._complete = True

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        keep = self._complete and self.headers.get("connection", "").lower() != "close"
        self._pool._release(self._origin, self._conn, keep)


async def _read_with_watchdog(reader: asyncio.StreamReader, loop: asyncio.AbstractEventLoop,
                              timeout_s: float) -> bytes:
    if reader._buffer:  # type: ignore[attr-defined]  # data already here: no timer needed
        return await reader.read(_READ_SIZE)
    handle = loop.call_later(timeout_s, reader.set_exception,
                             TimeoutError(f"no data from the pod for {timeout_s:.0f}s"))
    try:
        return await reader.read(_READ_SIZE)
    finally:
        handle.cancel()


class Http1Pool:
    def __init__(self, *, connect_timeout_s: float = 2.0, read_timeout_s: float = 300.0,
                 max_idle_per_origin: int = 16, idle_expiry_s: float = 2.0,
                 headers: dict[str, str] | None = None) -> None:
        self._connect_timeout_s = connect_timeout_s
        self._read_timeout_s = read_timeout_s
        self._max_idle = max_idle_per_origin
        self._expiry_s = idle_expiry_s
        # Sent with every request (the pods' API key); rendered once.
        self._extra_head = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
        self._origins: dict[str, Origin] = {}
        self._state: dict[Origin, _OriginState] = {}

    def origin(self, url: str) -> Origin:
        found = self._origins.get(url)
        if found is None:
            found = self._origins[url] = Origin.parse(url)
        return found

    async def post(self, url: str, path: str, body: bytes, content_type: str = "application/json",
                   accept: str = "text/event-stream", headers: Mapping[str, str] | None = None) -> StreamResponse:
        """Sends the request and returns once the response headers are in; the body streams from there."""
        origin = self.origin(url)
        extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
        head = (f"POST {path} HTTP/1.1\r\nHost: {origin.authority}\r\nContent-Type: {content_type}\r\n"
                f"Accept: {accept}\r\nContent-Length: {len(body)}\r\n{self._extra_head}{extra}"
                "Connection: keep-alive\r\n\r\n").encode()
        while True:
            conn = self._idle(origin)
            fresh = conn is None
            if conn is None:
                conn = await self._connect(origin)
            try:
                return await self._exchange(origin, conn, head + body)
            except HttpError:
                conn.close()
                if fresh:
                    raise
                # A reused connection the server had already closed: not the pod's fault; stop reusing.
                self._state[origin].reuse = False
            except BaseException:
                conn.close()
                raise

    def _idle(self, origin: Origin) -> _Conn | None:
        state = self._state.setdefault(origin, _OriginState())
        now = time.monotonic()
        if not state.reuse:
            while state.idle:
                state.idle.pop().close()
            return None
        while state.idle:
            conn = state.idle.pop()
            if conn.usable(now, self._expiry_s):
                return conn
            if conn.reader.at_eof():
                state.reuse = False
            conn.close()
        return None

    async def _connect(self, origin: Origin) -> _Conn:
        try:
            async with asyncio.timeout(self._connect_timeout_s):
                reader, writer = await asyncio.open_connection(origin.host, origin.port, ssl=origin.tls or None,
                                                               limit=_MAX_HEADER)
        except (OSError, TimeoutError) as exc:
            raise HttpError(f"connect to {origin.authority} failed: {exc!r}") from exc
        return _Conn(reader, writer)

    async def _exchange(self, origin: Origin, conn: _Conn, request: bytes) -> StreamResponse:
        try:
            conn.writer.write(request)
            # Waiting for the headers covers the pod's queueing and prefill: the read timeout bounds it.
            async with asyncio.timeout(self._read_timeout_s):
                raw = await conn.reader.readuntil(b"\r\n\r\n")
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError) as exc:
            raise HttpError(f"{origin.authority} sent no response: {exc!r}") from exc
        lines = raw.decode("latin-1").split("\r\n")
        try:
            status = int(lines[0].split(" ", 2)[1])
        except (IndexError, ValueError) as exc:
            raise HttpError(f"{origin.authority}: bad status line {lines[0]!r}") from exc
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            if sep:
                headers[name.strip().lower()] = value.strip()
        return StreamResponse(self, origin, conn, status, headers, b"", self._read_timeout_s)

    def _release(self, origin: Origin, conn: _Conn, keep: bool) -> None:
        state = self._state.setdefault(origin, _OriginState())
        if keep and state.reuse and len(state.idle) < self._max_idle and not conn.reader.at_eof():
            conn.idle_since = time.monotonic()
            state.idle.append(conn)
        else:
            conn.close()

    async def close(self) -> None:
        for state in self._state.values():
            for conn in state.idle:
                conn.close()
            state.idle.clear()
