"""A fast fake OpenAI-compatible pod: streams vLLM-shaped SSE chunks, one token per chunk, for gateway benchmarks
on a CPU (benchmarks/gateway_cpu.py). It must cost far less CPU per token than the gateway it feeds, so it is a
bare asyncio Protocol with every chunk pre-built, and one timer per tick for all streams (as vLLM's engine emits
one token to every running request per step), never one per stream.

    python benchmarks/fake_pod.py --port 8000 --tick-ms 10     # each stream gets a token every 10 ms

Serves POST /v1/chat/completions and /v1/completions (stream=true; max_tokens from the body; the usage chunk and
[DONE] at the end, as vLLM with stream_options.include_usage), GET /health and GET /v1/models.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re

MODEL = "fake-model"
_WORDS = [" the", " of", " and", " to", " a", " in", " is", " that", " for", " it", " as", " with", " be", " on",
          " not", " this", " we", " are", " by", " so", " then", " if", " x", " =", " 2", " +", " 1", ".", ","]


def _frame(payload: bytes) -> bytes:
    """One HTTP/1.1 chunk holding one SSE event."""
    event = b"data: " + payload + b"\n\n"
    return b"%x\r\n%s\r\n" % (len(event), event)


def _chunk(delta: dict[str, str], finish: str | None) -> bytes:
    # The shape vLLM's OpenAI server writes (fields and order), so that the gateway parses what it would there.
    return _frame(json.dumps({"id": "chatcmpl-0123456789abcdef", "object": "chat.completion.chunk", "created": 1700000000,
                              "model": MODEL, "choices": [{"index": 0, "delta": delta, "logprobs": None,
                                                           "finish_reason": finish}]}, separators=(",", ":")).encode())


FIRST = _chunk({"role": "assistant", "content": ""}, None)
TOKENS = [_chunk({"content": w}, None) for w in _WORDS]
LAST = _chunk({"content": ""}, "length")
DONE = _frame(b"[DONE]") + b"0\r\n\r\n"
HEAD = (b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream; charset=utf-8\r\ntransfer-encoding: chunked\r\n"
        b"connection: keep-alive\r\n\r\n")
_MAX_TOKENS = re.compile(rb'"max_tokens":\s*(\d+)')


def _plain(status: str, body: bytes) -> bytes:
    return (b"HTTP/1.1 %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s"
            % (status.encode(), len(body), body))


MODELS = _plain("200 OK", json.dumps({"object": "list", "data": [{"id": MODEL, "object": "model"}]}).encode())
HEALTH = _plain("200 OK", b"")
NOT_FOUND = _plain("404 Not Found", b'{"error":"not found"}')


class _Stream:
    __slots__ = ("conn", "left", "sent", "prompt_tokens")

    def __init__(self, conn: PodProtocol, max_tokens: int, prompt_tokens: int) -> None:
        self.conn = conn
        self.left = max_tokens
        self.sent = 0
        self.prompt_tokens = prompt_tokens


class Engine:
    """The pod's 'engine': every tick, one token to each running stream."""

    def __init__(self, tick_s: float) -> None:
        self.tick_s = tick_s
        self.streams: set[_Stream] = set()

    def add(self, s: _Stream) -> None:
        self.streams.add(s)

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        next_at = loop.time()
        while True:
            next_at += self.tick_s
            await asyncio.sleep(max(0.0, next_at - loop.time()))
            next_at = max(next_at, loop.time() - self.tick_s)  # never try to catch up a backlog in a burst
            done = []
            for s in self.streams:
                t = s.conn.transport
                if t is None or t.is_closing():
                    done.append(s)
                    continue
                if s.left > 0:
                    t.write(TOKENS[s.sent % len(TOKENS)])
                    s.left -= 1
                    s.sent += 1
                if s.left == 0:
                    usage = {"prompt_tokens": s.prompt_tokens, "completion_tokens": s.sent,
                             "total_tokens": s.prompt_tokens + s.sent}
                    t.write(LAST + _frame(json.dumps({"id": "chatcmpl-0123456789abcdef", "object":
                                                      "chat.completion.chunk", "created": 1700000000, "model": MODEL,
                                                      "choices": [], "usage": usage}).encode()) + DONE)
                    done.append(s)
            for s in done:
                self.streams.discard(s)


class PodProtocol(asyncio.Protocol):
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.transport: asyncio.Transport | None = None
        self.buf = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None

    def data_received(self, data: bytes) -> None:
        self.buf += data
        while True:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head = self.buf[:end].decode("latin-1")
            lines = head.split("\r\n")
            length = 0
            for line in lines[1:]:
                name, _, value = line.partition(":")
                if name.strip().lower() == "content-length":
                    length = int(value)
            if len(self.buf) < end + 4 + length:
                return
            body = self.buf[end + 4:end + 4 + length]
            self.buf = self.buf[end + 4 + length:]
            self.handle(lines[0].split(" ")[:2], body)

    def handle(self, method_path: list[str], body: bytes) -> None:
        assert self.transport is not None
        method, path = method_path
        if method == "GET" and path == "/health":
            self.transport.write(HEALTH)
        elif method == "GET" and path == "/v1/models":
            self.transport.write(MODELS)
        elif method == "POST" and path in ("/v1/chat/completions", "/v1/completions"):
            found = _MAX_TOKENS.search(body)
            self.transport.write(HEAD + FIRST)
            self.engine.add(_Stream(self, int(found.group(1)) if found else 16, len(body) // 4))
        else:
            self.transport.write(NOT_FOUND)


async def serve(host: str, port: int, tick_ms: float, ready: str = "") -> None:
    engine = Engine(tick_ms / 1000)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: PodProtocol(engine), host, port, backlog=1024)
    ticker = asyncio.create_task(engine.run())
    bound = server.sockets[0].getsockname()[1]
    print(f"fake pod on http://{host}:{bound}, tick {tick_ms} ms", flush=True)
    if ready:
        with open(ready, "w") as f:  # noqa: ASYNC230 - once, at start-up
            f.write(str(bound))
    try:
        await server.serve_forever()
    finally:
        ticker.cancel()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0, help="0: a free one (written to --ready-file)")
    p.add_argument("--tick-ms", type=float, default=10.0, help="time between two tokens of each stream")
    p.add_argument("--ready-file", default="", help="where to write the bound port once serving")
    a = p.parse_args()
    asyncio.run(serve(a.host, a.port, a.tick_ms, a.ready_file))


if __name__ == "__main__":
    main()
