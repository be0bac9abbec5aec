"""benchmarks/common.py, the helpers every benchmark shares: percentiles, the closed loop, the streamed chat call
(against a scripted SSE server on loopback, named as such: deterministic bytes split at awkward places) and the
wait for a pod's /health. The benchmarks themselves run against real pods and stacks (`make bench`)."""

from __future__ import annotations

import asyncio
import json
import math
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest

from benchmarks.common import Sample, closed_loop, pct, stream_chat, wait_http


def test_pct_is_the_nearest_rank() -> None:
    values = [0.5, 0.1, 0.4, 0.2, 0.3]
    assert pct(values, 0.5) == 0.3
    assert pct(values, 0.99) == 0.5
    assert pct([7.0], 0.99) == 7.0
    assert math.isnan(pct([], 0.5))


async def test_closed_loop_runs_every_request_at_most_concurrency_at_a_time() -> None:
    running = peak = 0
    seen: list[int] = []

    async def call(i: int) -> Sample:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(0.01)
        running -= 1
        seen.append(i)
        return Sample(ttft=0.0, tokens=i)

    run = await closed_loop(call, requests=10, concurrency=3)
    assert sorted(seen) == list(range(10)) and peak == 3
    assert run.tokens == sum(range(10)) and run.wall > 0


def _sse(obj: dict | str) -> bytes:
    return f"data: {obj if isinstance(obj, str) else json.dumps(obj)}\n\n".encode()


STREAM = (_sse({"choices": [{"delta": {"role": "assistant"}}]}) + _sse({"choices": [{"delta": {"content": "Hi"}}]})
          + _sse({"choices": [{"delta": {"content": " there"}}]})
          + _sse({"choices": [], "usage": {"completion_tokens": 2, "prompt_tokens": 11}}) + _sse("[DONE]"))


@asynccontextmanager
async def scripted_sse_server(status: int, body: bytes) -> AsyncIterator[str]:
    """Answers every request with `status` and body, written in 7-byte pieces so that events cross reads."""
    requests: list[dict] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length"))
        requests.append(json.loads(await reader.readexactly(length)))
        writer.write(f"HTTP/1.1 {status} X\r\nContent-Type: text/event-stream\r\nConnection: close\r\n\r\n".encode())
        for i in range(0, len(body), 7):
            writer.write(body[i:i + 7])
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.close()
        await server.wait_closed()
    assert all(r["stream"] and r["stream_options"] == {"include_usage": True} for r in requests)


async def test_stream_chat_reads_the_stream_and_its_usage() -> None:
    async with scripted_sse_server(200, STREAM) as url, httpx.AsyncClient() as client:
        sample = await stream_chat(client, url, [("user", "hello")], 8, model="m", ignore_eos=True)
    assert (sample.tokens, sample.prompt_tokens, sample.pod) == (2, 11, url)
    assert 0 < sample.ttft <= sample.total


async def test_stream_chat_says_what_the_pod_answered_on_an_error() -> None:
    async with scripted_sse_server(503, b"busy") as url, httpx.AsyncClient() as client:
        with pytest.raises(RuntimeError, match="503"):
            await stream_chat(client, url, [("user", "hello")], 8)


def test_wait_http_reports_a_pod_that_exits_with_its_log(tmp_path: Path) -> None:
    log = tmp_path / "pod.log"
    log.write_text("model file not found\n")
    proc = subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"])
    proc.wait()
    with pytest.raises(RuntimeError, match="exited with 3(.|\n)*model file not found"):
        asyncio.run(wait_http("http://127.0.0.1:9", proc, timeout_s=30, log=log))
