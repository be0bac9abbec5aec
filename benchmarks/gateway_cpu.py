"""The gateway's own CPU cost per streamed token, without a GPU: a fake vLLM-shaped pod (benchmarks/fake_pod.py,
one token per SSE chunk, every stream ticking together), the gateway in its own process in front of it (as
benchmarks/gpu_gateway.py runs it), and gRPC load-generator processes; closed loops at each concurrency.

    python benchmarks/gateway_cpu.py                               # this checkout
    python benchmarks/gateway_cpu.py --baseline /tmp/main          # against another checkout (its own .venv)
    python benchmarks/gateway_cpu.py --workers 1 2                 # this checkout with 1 and 2 gateway workers
    python benchmarks/gateway_cpu.py --holds 0 0.02                # without and with the stream hold under load
    python benchmarks/gateway_cpu.py --event-loops asyncio uvloop  # on asyncio's own loop and on uvloop

The figure that matters is the gateway's CPU milliseconds per 1 000 streamed tokens (user + system time of
every process in the gateway's process group, over the measured cells, divided by the tokens the clients got):
it does not depend on what else runs on the machine, unlike tokens/s, which on a small shared host is set by
whoever gets the cores. Gateways under comparison run side by side and their cells alternate round by round, so
drift hits both alike; the ratios printed are against the first one (the baseline).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import REPO, Run, child_env, pct, proc_stat  # noqa: E402
from benchmarks.gpu_gateway import ClientPool, Procs, wait_ready  # noqa: E402


def group_cpu_s(pgid: int) -> float:
    """CPU seconds (user + system) of every live process of a process group."""
    return sum(group_cpu_by_pid(pgid).values())


def group_cpu_by_pid(pgid: int) -> dict[int, float]:
    """CPU seconds (user + system) of each live process of a process group."""
    out = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            group, cpu = proc_stat(entry)
        except OSError:
            continue
        if group == pgid:
            out[int(entry)] = cpu
    return out


class Gateway:
    """One gateway under test: a checkout (its own .venv when it has one) and a worker count."""

    def __init__(self, name: str, checkout: Path, workers: int, pod_url: str, args: argparse.Namespace,
                 env: dict[str, str] | None = None) -> None:
        self.name, self.checkout, self.workers, self.pod_url, self.args = name, checkout, workers, pod_url, args
        self.env = env or {}
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0

    async def start(self, procs: Procs) -> None:
        python = self.checkout / ".venv" / "bin" / "python"
        ready = procs.logdir / f"{self.name}.ready.json"
        ready.unlink(missing_ok=True)
        env = child_env({"CONCLAVE_GRPC_PORT": "0", "CONCLAVE_BACKEND": "openai", "CONCLAVE_PODS": self.pod_url,
                         "CONCLAVE_POD_MAX_INFLIGHT": str(self.args.gateway_inflight),
                         "CONCLAVE_POD_QUEUE_LIMIT": str(self.args.gateway_inflight),
                         "CONCLAVE_LOG_LEVEL": "WARNING", "CONCLAVE_LOG_JSON": "false",
                         "CONCLAVE_GATEWAY_WORKERS": str(self.workers),
                         "PYTHONPATH": f"{self.checkout}{os.pathsep}{self.checkout / 'proto'}", **self.env})
        argv = [str(python if python.exists() else sys.executable),
                str(self.checkout / "benchmarks" / "gpu_gateway.py"), "--gateway-child", "--ready-file", str(ready)]
        self.proc = procs.start(self.name, argv, env)
        self.port = (await wait_ready(ready, self.proc, 120))["port"]

    def cpu_s(self) -> float:
        assert self.proc is not None
        return group_cpu_s(self.proc.pid)  # Procs starts each child in a session of its own: pgid == pid


async def measure(gw: Gateway, pool: ClientPool, level: int, requests: int, max_tokens: int) -> tuple[Run, float]:
    cpu0 = gw.cpu_s()
    run = await pool.run(level, requests, max_tokens)
    return run, gw.cpu_s() - cpu0


async def bench(args: argparse.Namespace) -> int:
    logdir = Path(args.log_dir)
    logdir.mkdir(parents=True, exist_ok=True)
    procs = Procs(logdir / "pids", logdir)
    try:
        ready = logdir / "fake_pod.port"
        ready.unlink(missing_ok=True)
        procs.start("fake_pod", [sys.executable, str(REPO / "benchmarks" / "fake_pod.py"), "--tick-ms",
                                 str(args.tick_ms), "--ready-file", str(ready)], child_env({}))
        for _ in range(100):
            if ready.exists() and ready.read_text():  # noqa: ASYNC240 - tiny local file
                break
            await asyncio.sleep(0.1)
        pod_url = f"http://127.0.0.1:{ready.read_text()}"  # noqa: ASYNC240 - tiny local file
        gateways: list[Gateway] = []
        if args.baseline:
            gateways.append(Gateway("baseline", Path(args.baseline).resolve(), 1, pod_url, args))
        for n in args.workers:
            for h in args.holds:
                for loop in args.event_loops:
                    name = f"ours_w{n}" + (f"_hold{h:g}" if args.holds != [None] else "") + (f"_{loop}" if loop else "")
                    env = {"CONCLAVE_STREAM_HOLD_S": str(h)} if h is not None else {}
                    env |= {"CONCLAVE_EVENT_LOOP": loop} if loop else {}
                    gateways.append(Gateway(name, REPO, n, pod_url, args, env))
        pools = {}
        for gw in gateways:
            await gw.start(procs)
            pools[gw.name] = await ClientPool("grpc", f"127.0.0.1:{gw.port}", "", args).start()
            print(f"{gw.name}: {gw.checkout} on :{gw.port}, {gw.workers} worker(s)", flush=True)
        warm = max(args.levels)
        for gw in gateways:
            await pools[gw.name].run(warm, warm, args.max_tokens)
        runs = {(g.name, c): Run() for g in gateways for c in args.levels}
        cpu = {(g.name, c): 0.0 for g in gateways for c in args.levels}
        per_round: dict[tuple[str, int], list[float]] = {k: [] for k in runs}
        for r in range(args.rounds):
            order = gateways if r % 2 == 0 else list(reversed(gateways))
            for c in args.levels:
                for gw in order:
                    run, spent = await measure(gw, pools[gw.name], c, max(args.min_requests, args.waves * c),
                                               args.max_tokens)
                    runs[(gw.name, c)].add(run)
                    cpu[(gw.name, c)] += spent
                    per_round[(gw.name, c)].append(spent / run.tokens * 1e6 if run.tokens else float("nan"))
            print(f"round {r + 1}/{args.rounds} done", flush=True)
        for pool in pools.values():
            await pool.close()
        report(gateways, args, runs, cpu, per_round)
        for gw in gateways:
            if gw.workers > 1 and gw.proc is not None:
                shares = sorted(group_cpu_by_pid(gw.proc.pid).values(), reverse=True)
                print(f"{gw.name}: CPU seconds of each process since start {[round(x, 1) for x in shares]}")
    finally:
        procs.stop_all()
    return 0


def report(gateways: list[Gateway], args: argparse.Namespace, runs: dict[tuple[str, int], Run],
           cpu: dict[tuple[str, int], float], per_round: dict[tuple[str, int], list[float]]) -> None:
    print(f"\nfake pod tick {args.tick_ms} ms per token per stream; {args.max_tokens} tokens a request; "
          f"{args.client_procs} client processes; {args.rounds} rounds; {os.cpu_count()} cores on this host")
    print(f"{'gateway':<20}{'conc':>5}{'tokens':>9}{'tokens/s':>10}{'TTFT p50':>10}{'CPU ms/1k tok':>15}"
          f"  per round")
    doc: dict[str, Any] = {}
    for c in args.levels:
        for gw in gateways:
            run = runs[(gw.name, c)]
            ms = cpu[(gw.name, c)] / run.tokens * 1e6 if run.tokens else float("nan")
            doc.setdefault(gw.name, {})[str(c)] = {
                "tokens": run.tokens, "tokens_per_s": round(run.tokens_per_s, 1),
                "ttft_p50_ms": round(pct([s.ttft for s in run.samples], 0.5) * 1e3, 2),
                "cpu_ms_per_1k_tokens": round(ms, 1), "per_round": [round(x, 1) for x in per_round[(gw.name, c)]]}
            d = doc[gw.name][str(c)]
            print(f"{gw.name:<20}{c:>5}{run.tokens:>9}{d['tokens_per_s']:>10}{d['ttft_p50_ms']:>10}{ms:>15.1f}"
                  f"  {d['per_round']}")
    base = gateways[0].name
    print()
    for gw in gateways[1:]:
        for c in args.levels:
            a, b = doc[gw.name][str(c)], doc[base][str(c)]
            rounds = [x / y for x, y in zip(a["per_round"], b["per_round"], strict=True)]
            print(f"{gw.name}/{base} conc {c}: CPU per token {a['cpu_ms_per_1k_tokens'] / b['cpu_ms_per_1k_tokens']:.3f} "
                  f"(rounds {statistics.median(rounds):.3f} median, {min(rounds):.3f}-{max(rounds):.3f}), "
                  f"tokens/s {a['tokens_per_s'] / b['tokens_per_s']:.3f}")
    if args.json:
        Path(args.json).write_text(json.dumps(doc, indent=1))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--baseline", metavar="DIR", default="",
                   help="another checkout (with its own `make setup`) whose gateway runs beside this one's")
    p.add_argument("--workers", type=int, nargs="+", default=[1],
                   help="CONCLAVE_GATEWAY_WORKERS of this checkout's gateways (one gateway per value)")
    p.add_argument("--holds", type=float, nargs="+", default=[None],
                   help="CONCLAVE_STREAM_HOLD_S of this checkout's gateways (one gateway per value; default: its own)")
    p.add_argument("--event-loops", nargs="+", default=[""], choices=["", "asyncio", "uvloop"],
                   help="CONCLAVE_EVENT_LOOP of this checkout's gateways (one gateway per value; default: its own)")
    p.add_argument("--levels", type=int, nargs="+", default=[1, 32, 128], help="concurrency levels")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--waves", type=int, default=3, help="requests per cell = max(min_requests, waves*level)")
    p.add_argument("--min-requests", type=int, default=8)
    p.add_argument("--max-tokens", type=int, default=128)
    p.add_argument("--tick-ms", type=float, default=10.0,
                   help="fake pod: time between two tokens of a stream (10 ms: 12.8 k tokens/s at 128 streams, "
                        "about what vLLM gave the 0.5B model on the H100)")
    p.add_argument("--client-procs", type=int, default=2, help="gRPC load-generator processes")
    p.add_argument("--client-channels", type=int, default=4,
                   help="gRPC connections per load-generator process (spread over --workers by the kernel)")
    p.add_argument("--gateway-inflight", type=int, default=256)
    p.add_argument("--prompts", type=int, default=32)
    p.add_argument("--prompt-words", type=int, default=40)
    p.add_argument("--log-dir", default="/tmp/gateway_cpu_logs")
    p.add_argument("--json", default="", help="also write the figures here")
    args = p.parse_args()
    args.ignore_eos = True  # ClientPool reads it (HTTP clients only)
    return asyncio.run(bench(args))


if __name__ == "__main__":
    sys.exit(main())
