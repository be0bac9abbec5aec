"""Inference gateway overhead: the same prompts on the same llama.cpp pod, through the gateway and direct.

Usage: python benchmarks/inference.py [--requests 8] [--rounds 6] [--max-tokens 64] [--concurrency 1 8]

Starts everything it needs: nats-server, one CPU pod (`pod_llamacpp --model tiny`) and the gateway as
its own process (`python -m services.inference.service`, as deployed). For each concurrency level, a
closed loop keeps that many chat requests in flight, either through the gateway (gRPC streaming) or
straight to the pod's /v1/chat/completions (httpx, SSE). The modes alternate round by round so that
drift hits both alike. Prints TTFT p50/p99 and completion tokens/s per mode, the gateway/direct ratio,
the TTFT the gateway adds at p50, and the gateway's own CPU per token (the figure least disturbed by
other load on the host). Targets: added TTFT p50 < 1 ms, throughput ratio >= 0.98.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import grpc  # noqa: E402
import httpx  # noqa: E402
from grpc_health.v1 import health_pb2, health_pb2_grpc  # noqa: E402

from conclave.v1 import inference_pb2, inference_pb2_grpc  # noqa: E402
from services.stack.natsd import NatsServer, die_with_parent, free_port  # noqa: E402

PROMPTS = [
    "Explain how a hash ring balances load.",
    "Write a short poem about the sea.",
    "List three uses of a message bus.",
    "Describe a cat to someone who has never seen one.",
    "Why is the sky blue? Answer in detail.",
    "Tell me a story about a lighthouse keeper.",
    "What makes a good unit test?",
    "Summarise the rules of chess.",
]


@dataclass
class Sample:
    ttft: float
    tokens: int


@dataclass
class Run:
    samples: list[Sample] = field(default_factory=list)
    wall: float = 0.0
    gateway_cpu: float = 0.0  # CPU seconds the gateway process used during the run

    def add(self, other: Run) -> None:
        self.samples += other.samples
        self.wall += other.wall
        self.gateway_cpu += other.gateway_cpu

    @property
    def tokens(self) -> int:
        return sum(s.tokens for s in self.samples)

    def ttft(self, q: float) -> float:
        values = sorted(s.ttft for s in self.samples)
        return values[min(len(values) - 1, int(q * len(values)))]

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.wall


async def direct_call(client: httpx.AsyncClient, url: str, prompt: str, max_tokens: int) -> Sample:
    body = {"messages": [{"role": "user", "content": prompt}], "max_tokens": max_tokens, "temperature": 0.0,
            "stream": True, "stream_options": {"include_usage": True}}
    started = time.perf_counter()
    ttft = 0.0
    tokens = 0
    buf = b""
    request = client.build_request("POST", url + "/v1/chat/completions", json=body)
    for attempt in range(3):
        # The same stale-connection retry as the gateway's backend: llama.cpp closes the connection
        # after each streamed response, and a pooled one may be taken before its FIN arrives.
        try:
            resp = await client.send(request, stream=True)
            break
        except (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError):
            if attempt == 2:
                raise
    try:
        async for piece in resp.aiter_raw():
            buf += piece
            while b"\n\n" in buf:
                event, buf = buf.split(b"\n\n", 1)
                data = event[6:]
                if data == b"[DONE]":
                    continue
                obj = json.loads(data)
                if not ttft and obj["choices"] and obj["choices"][0]["delta"].get("content"):
                    ttft = time.perf_counter() - started
                if obj.get("usage"):
                    tokens = obj["usage"]["completion_tokens"]
    finally:
        await resp.aclose()
    return Sample(ttft, tokens)


async def gateway_call(stub: inference_pb2_grpc.InferenceStub, prompt: str, max_tokens: int) -> Sample:
    req = inference_pb2.GenerateRequest(messages=[inference_pb2.ChatMessage(role="user", content=prompt)],
                                        max_tokens=max_tokens, temperature=0.0)
    started = time.perf_counter()
    ttft = 0.0
    tokens = 0
    async for resp in stub.Generate(req, timeout=120):
        if resp.text and not ttft:
            ttft = time.perf_counter() - started
        if resp.HasField("usage"):
            tokens = resp.usage.completion_tokens
    return Sample(ttft, tokens)


async def closed_loop(call, requests: int, concurrency: int) -> Run:  # type: ignore[no-untyped-def]
    todo = iter(range(requests))
    run = Run()

    async def worker() -> None:
        for i in todo:
            run.samples.append(await call(PROMPTS[i % len(PROMPTS)]))

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    run.wall = time.perf_counter() - started
    return run


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process, from /proc (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def start_pod(port: int, parallel: int, log: Path, threads: int) -> subprocess.Popen[bytes]:
    with open(log, "wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "services.inference.pod_llamacpp", "--model", "tiny", "--port", str(port),
             "--parallel", str(parallel), "--ctx", str(1024 * parallel), "--threads", str(threads)],
            cwd=REPO, stdout=out, stderr=out, preexec_fn=die_with_parent)


def start_gateway(nats_url: str, pod_url: str, port: int, limit: int, log: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": str(REPO), "CONCLAVE_NATS_URL": nats_url, "CONCLAVE_PODS": pod_url,
           "CONCLAVE_GRPC_PORT": str(port), "CONCLAVE_POD_MAX_INFLIGHT": str(limit), "CONCLAVE_LOG_LEVEL": "WARNING"}
    with open(log, "wb") as out:
        return subprocess.Popen([sys.executable, "-m", "services.inference.service"], cwd=REPO, env=env,
                                stdout=out, stderr=out, preexec_fn=die_with_parent)


async def wait_http(url: str, proc: subprocess.Popen[bytes], log: Path, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    async with httpx.AsyncClient() as client:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise SystemExit(f"pod exited: {(await asyncio.to_thread(log.read_text))[-2000:]}")
            try:
                if (await client.get(url + "/health", timeout=1)).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.1)
    raise SystemExit("pod did not become healthy")


async def wait_grpc(channel: grpc.aio.Channel, proc: subprocess.Popen[bytes], log: Path,
                    timeout_s: float = 60) -> None:
    stub = health_pb2_grpc.HealthStub(channel)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"gateway exited: {(await asyncio.to_thread(log.read_text))[-2000:]}")
        try:
            resp = await stub.Check(health_pb2.HealthCheckRequest(service="conclave.v1.Inference"), timeout=1)
            if resp.status == health_pb2.HealthCheckResponse.SERVING:
                return
        except grpc.aio.AioRpcError:
            pass
        await asyncio.sleep(0.1)
    raise SystemExit("gateway did not become ready")


async def bench(args: argparse.Namespace, pod_url: str, gateway_addr: str,
                procs: list[tuple[subprocess.Popen[bytes], Path]]) -> None:
    await wait_http(pod_url, *procs[0])
    limits = httpx.Limits(max_connections=64, max_keepalive_connections=64, keepalive_expiry=2.0)
    async with httpx.AsyncClient(timeout=120, limits=limits) as client, \
            grpc.aio.insecure_channel(gateway_addr) as channel:
        await wait_grpc(channel, *procs[1])
        stub = inference_pb2_grpc.InferenceStub(channel)

        def direct(prompt: str):  # type: ignore[no-untyped-def]
            return direct_call(client, pod_url, prompt, args.max_tokens)

        def gateway(prompt: str):  # type: ignore[no-untyped-def]
            return gateway_call(stub, prompt, args.max_tokens)

        modes = {"direct": direct, "gateway": gateway}
        # Warm-up: the pod's prompt cache, both connection pools, the gateway's code paths.
        for call in modes.values():
            await closed_loop(call, 2 * len(PROMPTS), max(args.concurrency))
        results: dict[tuple[str, int], Run] = {(m, c): Run() for m in modes for c in args.concurrency}
        gateway_pid = procs[1][0].pid
        for r in range(args.rounds):
            order = list(modes) if r % 2 == 0 else list(reversed(modes))
            for c in args.concurrency:
                for mode in order:
                    cpu0 = cpu_seconds(gateway_pid)
                    run = await closed_loop(modes[mode], args.requests, c)
                    run.gateway_cpu = cpu_seconds(gateway_pid) - cpu0
                    results[(mode, c)].add(run)
    print_table(results, args)


def print_table(results: dict[tuple[str, int], Run], args: argparse.Namespace) -> None:
    print(f"\n{args.requests * args.rounds} requests per cell, max_tokens={args.max_tokens}, SmolLM2-135M on one "
          f"llama.cpp pod ({args.pod_threads} threads on {os.cpu_count()} cores), temperature 0\n")
    print(f"{'conc':>4} {'mode':>8} {'TTFT p50 ms':>12} {'TTFT p99 ms':>12} {'tokens/s':>9}")
    for c in args.concurrency:
        for mode in ("direct", "gateway"):
            run = results[(mode, c)]
            print(f"{c:>4} {mode:>8} {run.ttft(0.5) * 1000:>12.2f} {run.ttft(0.99) * 1000:>12.2f} "
                  f"{run.tokens_per_s:>9.1f}")
    print()
    print(f"{'conc':>4} {'added TTFT p50 ms':>18} {'added TTFT p99 ms':>18} {'throughput ratio':>17} "
          f"{'gateway CPU us/token':>21}")
    for c in args.concurrency:
        d, g = results[("direct", c)], results[("gateway", c)]
        print(f"{c:>4} {(g.ttft(0.5) - d.ttft(0.5)) * 1000:>18.2f} {(g.ttft(0.99) - d.ttft(0.99)) * 1000:>18.2f} "
              f"{g.tokens_per_s / d.tokens_per_s:>17.3f} {g.gateway_cpu / g.tokens * 1e6:>21.0f}")
    print("\ntargets: added TTFT p50 < 1 ms, throughput ratio >= 0.98")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=8, help="requests per mode, level and round (default 8)")
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--rounds", type=int, default=6,
                        help="rounds; the modes alternate within each, so load drift hits both (default 6)")
    parser.add_argument("--pod-threads", type=int, default=max(1, (os.cpu_count() or 2) - 1),
                        help="CPU threads of the pod (default: cores - 1, leaving one core to the gateway and the "
                             "client, as a gateway deployed on its own CPU would have)")
    args = parser.parse_args()
    parallel = max(args.concurrency)
    with tempfile.TemporaryDirectory(prefix="conclave-bench-") as tmp:
        tmpdir = Path(tmp)
        nats = NatsServer(store_dir=tmpdir / "js", log_file=tmpdir / "nats.log").start()
        pod_port, grpc_port = free_port(), free_port()
        pod_url = f"http://127.0.0.1:{pod_port}"
        procs = [(start_pod(pod_port, parallel, tmpdir / "pod.log", args.pod_threads), tmpdir / "pod.log")]
        try:
            # The gateway probes the pod at start-up, so it starts once the pod answers.
            asyncio.run(wait_http(pod_url, *procs[0]))
            procs.append((start_gateway(nats.url, pod_url, grpc_port, parallel, tmpdir / "gateway.log"),
                          tmpdir / "gateway.log"))
            asyncio.run(bench(args, pod_url, f"127.0.0.1:{grpc_port}", procs))
        finally:
            for proc, _ in reversed(procs):
                proc.terminate()
                try:
                    proc.wait(15)
                except subprocess.TimeoutExpired:
                    proc.kill()
            nats.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
