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
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import grpc  # noqa: E402
import httpx  # noqa: E402
from grpc_health.v1 import health_pb2, health_pb2_grpc  # noqa: E402

from benchmarks.common import (  # noqa: E402
    REPO,
    Run,
    Sample,
    child_env,
    closed_loop,
    generate,
    proc_stat,
    stream_chat,
    wait_http,
)
from conclave.v1 import inference_pb2_grpc  # noqa: E402
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


def start_pod(port: int, parallel: int, log: Path, threads: int) -> subprocess.Popen[bytes]:
    with open(log, "wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "services.inference.pod_llamacpp", "--model", "tiny", "--port", str(port),
             "--parallel", str(parallel), "--ctx", str(1024 * parallel), "--threads", str(threads)],
            cwd=REPO, stdout=out, stderr=out, preexec_fn=die_with_parent)


def start_gateway(nats_url: str, pod_url: str, port: int, limit: int, log: Path) -> subprocess.Popen[bytes]:
    env = child_env({"CONCLAVE_NATS_URL": nats_url, "CONCLAVE_PODS": pod_url, "CONCLAVE_GRPC_PORT": str(port),
                     "CONCLAVE_POD_MAX_INFLIGHT": str(limit), "CONCLAVE_LOG_LEVEL": "WARNING"})
    with open(log, "wb") as out:
        return subprocess.Popen([sys.executable, "-m", "services.inference.service"], cwd=REPO, env=env,
                                stdout=out, stderr=out, preexec_fn=die_with_parent)


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
    await wait_http(pod_url, procs[0][0], 60, procs[0][1])
    limits = httpx.Limits(max_connections=64, max_keepalive_connections=64, keepalive_expiry=2.0)
    async with httpx.AsyncClient(timeout=120, limits=limits) as client, \
            grpc.aio.insecure_channel(gateway_addr) as channel:
        await wait_grpc(channel, *procs[1])
        stub = inference_pb2_grpc.InferenceStub(channel)

        def direct(i: int) -> Awaitable[Sample]:
            return stream_chat(client, pod_url, [("user", PROMPTS[i % len(PROMPTS)])], args.max_tokens)

        def gateway(i: int) -> Awaitable[Sample]:
            return generate(stub, [("user", PROMPTS[i % len(PROMPTS)])], args.max_tokens, timeout_s=120)

        modes = {"direct": direct, "gateway": gateway}
        # Warm-up: the pod's prompt cache, both connection pools, the gateway's code paths.
        for call in modes.values():
            await closed_loop(call, 2 * len(PROMPTS), max(args.concurrency))
        results: dict[tuple[str, int], Run] = {(m, c): Run() for m in modes for c in args.concurrency}
        # CPU seconds the gateway process used during each cell's runs.
        gateway_cpu: dict[tuple[str, int], float] = dict.fromkeys(results, 0.0)
        gateway_pid = procs[1][0].pid
        for r in range(args.rounds):
            order = list(modes) if r % 2 == 0 else list(reversed(modes))
            for c in args.concurrency:
                for mode in order:
                    cpu0 = proc_stat(gateway_pid)[1]
                    results[(mode, c)].add(await closed_loop(modes[mode], args.requests, c))
                    gateway_cpu[(mode, c)] += proc_stat(gateway_pid)[1] - cpu0
    print_table(results, gateway_cpu, args)


def print_table(results: dict[tuple[str, int], Run], gateway_cpu: dict[tuple[str, int], float],
                args: argparse.Namespace) -> None:
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
              f"{g.tokens_per_s / d.tokens_per_s:>17.3f} {gateway_cpu['gateway', c] / g.tokens * 1e6:>21.0f}")
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
            asyncio.run(wait_http(pod_url, procs[0][0], 60, procs[0][1]))
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
