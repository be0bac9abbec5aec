"""What the benchmarks share, so that none of them writes it again.

A benchmark puts the repository on sys.path (it runs as `python benchmarks/NAME.py`), then imports from here:
percentiles, a timed sample per streamed completion and a closed loop of them, one streamed chat completion
from an OpenAI-style model pod, one Generate through the gateway, a wait for a pod's /health, the
environment of a child process and that of a stack on the scripted model. What the project already has is used, not copied: the gateway's own SSE
reader (services.inference.backends.sse) and the process helpers of services.stack.natsd (free_port,
die_with_parent), which the benchmarks import from there.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
# Where the project is not installed (a bare copy on a lent machine), its packages and the generated protobuf
# modules still import from the checkout.
for _path in (REPO / "proto", REPO):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

from services.inference.backends.sse import DONE, data_events  # noqa: E402

Messages = list[tuple[str, str]]  # (role, content) pairs


def pct(values: list[float], q: float) -> float:
    """The nearest-rank q-quantile (0 < q < 1) of values; NaN for none."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


@dataclass
class Sample:
    """One streamed completion, timed by the client."""

    ttft: float  # request sent -> first non-empty text
    tokens: int  # completion tokens as the server counted them
    total: float = 0.0  # request sent -> end of the stream
    pod: str = ""  # which pod served it (the gateway says; a direct call names the URL)
    prompt_tokens: int = 0
    server_ttft: float = 0.0  # the gateway's own TTFT (Usage.ttft_s), when there is a gateway


@dataclass
class Run:
    """The samples of one or more closed loops and their summed wall time."""

    samples: list[Sample] = field(default_factory=list)
    wall: float = 0.0

    def add(self, other: Run) -> None:
        self.samples += other.samples
        self.wall += other.wall

    @property
    def tokens(self) -> int:
        return sum(s.tokens for s in self.samples)

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.wall if self.wall else float("nan")

    def ttft(self, q: float) -> float:
        return pct([s.ttft for s in self.samples], q)


async def closed_loop(call: Callable[[int], Awaitable[Sample]], requests: int, concurrency: int) -> Run:
    """Calls call(0) .. call(requests - 1), at most `concurrency` at a time, each worker starting its next
    call as soon as its last one ends."""
    todo = iter(range(requests))
    run = Run()

    async def worker() -> None:
        for i in todo:
            run.samples.append(await call(i))

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(min(concurrency, requests))))
    run.wall = time.perf_counter() - started
    return run


async def stream_chat(client: Any, url: str, messages: Messages, max_tokens: int, *, model: str = "",
                      ignore_eos: bool = False) -> Sample:
    """One streamed /v1/chat/completions on an OpenAI-style pod (client: an httpx.AsyncClient), at
    temperature 0, with the usage chunk at the end."""
    import httpx

    body: dict[str, Any] = {"messages": [{"role": r, "content": c} for r, c in messages],
                            "max_tokens": max_tokens, "temperature": 0.0, "stream": True,
                            "stream_options": {"include_usage": True}}
    if model:
        body["model"] = model
    if ignore_eos:
        body["ignore_eos"] = True
    started = time.perf_counter()
    ttft = 0.0
    tokens = prompt_tokens = 0
    request = client.build_request("POST", url + "/v1/chat/completions", json=body)
    for attempt in range(3):
        # The same stale-connection retry as the gateway's backend: llama.cpp closes the connection after each
        # streamed response, and a pooled one may be taken before its FIN arrives.
        try:
            resp = await client.send(request, stream=True)
            break
        except (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError):
            if attempt == 2:
                raise
    try:
        if resp.status_code != 200:
            raise RuntimeError(f"{url} answered {resp.status_code}: {(await resp.aread())[:500]!r}")
        async for data in data_events(resp.aiter_raw()):
            if data == DONE:
                continue
            obj = json.loads(data)
            if not ttft and obj.get("choices") and (obj["choices"][0].get("delta") or {}).get("content"):
                ttft = time.perf_counter() - started
            if obj.get("usage"):
                tokens = obj["usage"]["completion_tokens"]
                prompt_tokens = obj["usage"]["prompt_tokens"]
    finally:
        await resp.aclose()
    return Sample(ttft, tokens, time.perf_counter() - started, url, prompt_tokens)


async def generate(stub: Any, messages: Messages, max_tokens: int, *, session_key: str = "",
                   timeout_s: float = 600) -> Sample:
    """One streamed Generate through the gateway (stub: an InferenceStub), at temperature 0."""
    from conclave.v1 import inference_pb2

    req = inference_pb2.GenerateRequest(
        messages=[inference_pb2.ChatMessage(role=r, content=c) for r, c in messages],
        max_tokens=max_tokens, temperature=0.0, session_key=session_key)
    started = time.perf_counter()
    ttft = 0.0
    usage = None
    async for resp in stub.Generate(req, timeout=timeout_s):
        if resp.text and not ttft:
            ttft = time.perf_counter() - started
        if resp.HasField("usage"):
            usage = resp.usage
    if usage is None:
        raise RuntimeError("gateway stream ended without usage")
    return Sample(ttft, usage.completion_tokens, time.perf_counter() - started, usage.pod, usage.prompt_tokens,
                  usage.ttft_s)


def proc_stat(pid: int | str) -> tuple[int, float]:
    """A process's group id and CPU seconds (user + system), from /proc/PID/stat (Linux); OSError when gone."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()  # after the command name, which may hold spaces
    return int(fields[2]), (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def log_tail(log: Path | None, chars: int = 2000) -> str:
    return f":\n{log.read_text(errors='replace')[-chars:]}" if log is not None and log.exists() else ""


async def wait_http(url: str, proc: subprocess.Popen[bytes], timeout_s: float, log: Path | None = None) -> float:
    """Seconds until the pod at url answers /health with 200; RuntimeError (with the tail of its log) when its
    process exits first or the time is up."""
    import httpx

    t0 = time.monotonic()
    async with httpx.AsyncClient() as client:
        while time.monotonic() - t0 < timeout_s:
            if proc.poll() is not None:
                raise RuntimeError(f"pod {url} exited with {proc.returncode}{log_tail(log)}")
            try:
                if (await client.get(url + "/health", timeout=2)).status_code == 200:
                    return time.monotonic() - t0
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.1)
    raise RuntimeError(f"pod {url} not healthy after {timeout_s:.0f}s{log_tail(log)}")


def scripted_stack_env(tmp: Path, rules: list[dict[str, str]], nats_url: str, grpc_port: int,
                       latency_s: float) -> dict[str, str]:
    """The environment of a stack's services whose gateway answers from the scripted backend: each model call
    takes exactly latency_s and returns the reply its rule gives, so what is measured is Conclave's overhead;
    admission limits and the CEO's concurrency are set beyond anything a benchmark sends."""
    import yaml

    script = tmp / "script.yaml"
    script.write_text(yaml.safe_dump(rules))
    return child_env({"CONCLAVE_NATS_URL": nats_url, "CONCLAVE_INFERENCE_ADDR": f"127.0.0.1:{grpc_port}",
                      "CONCLAVE_GRPC_PORT": str(grpc_port), "CONCLAVE_BACKEND": "scripted",
                      "CONCLAVE_SCRIPTED_FILE": str(script), "CONCLAVE_SCRIPTED_LATENCY_S": str(latency_s),
                      "CONCLAVE_POD_MAX_INFLIGHT": "1000", "CONCLAVE_POD_QUEUE_LIMIT": "1000",
                      "CONCLAVE_LOG_LEVEL": "WARNING", "CONCLAVE_CONCURRENCY": "64", "CONCLAVE_DRAIN_GRACE_S": "2"})


def child_env(extra: dict[str, str]) -> dict[str, str]:
    """This process's environment for a child that imports the project from this checkout, unbuffered."""
    env = dict(os.environ)
    path = [str(REPO), str(REPO / "proto")] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(path))
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env
