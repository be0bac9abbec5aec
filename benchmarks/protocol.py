"""Protocol benchmark: the agent team's end-to-end time against its critical path, and agent calls/s.

Usage: python benchmarks/protocol.py [--problems 20] [--throughput-problems 150] [--security on|off]
       python benchmarks/protocol.py --compare-security [--rounds 2]

Every service runs as its own process (`conclave serve NAME`), as in production; the gateway runs the
scripted backend, so model time is exactly what we set and everything else is Conclave's overhead.
1. aime2024 profile, N=3 (one solver, two critics, consensus in round 1), 50 ms per model call, problems
   one at a time: wall time per problem against the critical path = 5 sequential stages × 50 ms
   (CEO, recruiter, solver, the critics together, evaluator).
2. The same with the paper's serial critic order (CONCLAVE_SERIAL_CRITICS=true): 6 stages.
3. Zero-latency model, 2 replicas of every role and of the CEO, many problems at once: agent calls/s.
Security (TLS and per-role users on NATS, mTLS to the gateway) is on, as `conclave up` runs it; --security off
runs everything open. --compare-security runs flows 1 and 3 with security off and on, alternating, in one run,
and prints the ratios on/off.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import nats  # noqa: E402
import yaml  # noqa: E402

from conclave.v1 import problem_pb2  # noqa: E402
from services.bus import permissions  # noqa: E402
from services.client.solve import solve  # noqa: E402
from services.runtime.settings import RuntimeSettings  # noqa: E402
from services.security.local import LocalSecurity  # noqa: E402
from services.stack.declare import declare_bus  # noqa: E402
from services.stack.natsd import NatsServer, free_port, reachable  # noqa: E402

RULES = [
    {"role": "ceo", "response": "Decision: continue\nRecruit Number: 3\nDirection: Check each step.\nMaximum Tokens: 2048"},
    {"role": "recruiter", "response": "1. A number theorist\n2. A combinatorics expert\n3. An algebra expert"},
    {"role": "solver", "response": "Adding the residues gives 204, so the answer is \\boxed{204}."},
    {"role": "critic", "response": "Every step checks out and the residues are added correctly.\n[Agree]"},
    {"role": "evaluator", "response": "Correctness: 1\nAdvice: none\nRecruit: none"},
]
ROLES = ("intake", "ceo", "recruiter", "solver", "critic", "evaluator")


class Stack:
    def __init__(self, tmp: Path, ns: NatsServer, latency_s: float, replicas: int, serial: bool) -> None:
        self.tmp, self.ns, nats_url = tmp, ns, ns.url
        self.grpc_port = free_port()
        script = tmp / "script.yaml"
        script.write_text(yaml.safe_dump(RULES))
        self.env = {**os.environ, "PYTHONPATH": str(REPO), "CONCLAVE_NATS_URL": nats_url,
                    "CONCLAVE_INFERENCE_ADDR": f"127.0.0.1:{self.grpc_port}", "CONCLAVE_GRPC_PORT": str(self.grpc_port),
                    "CONCLAVE_BACKEND": "scripted", "CONCLAVE_SCRIPTED_FILE": str(script),
                    "CONCLAVE_SCRIPTED_LATENCY_S": str(latency_s), "CONCLAVE_POD_MAX_INFLIGHT": "1000",
                    "CONCLAVE_POD_QUEUE_LIMIT": "1000", "CONCLAVE_SERIAL_CRITICS": str(serial).lower(),
                    "CONCLAVE_LOG_LEVEL": "WARNING", "CONCLAVE_CONCURRENCY": "64", "CONCLAVE_DRAIN_GRACE_S": "2",
                    **ns.env()}
        self.plan = [("inference", 1)] + [(r, replicas if r != "intake" else 1) for r in ROLES]
        self.procs: list[asyncio.subprocess.Process] = []

    async def __aenter__(self) -> Stack:
        # As `conclave up`: the admin declares the bus, each service runs as its own user (and mTLS certificate).
        await declare_bus(RuntimeSettings(**self.ns.settings_kwargs()))
        sec = self.ns.security
        for name, count in self.plan:
            env = {**self.env, **(sec.service_env(name) if sec else {})}
            for _ in range(count):
                log = open(self.tmp / f"{name}.log", "ab")  # noqa: SIM115
                self.procs.append(await asyncio.create_subprocess_exec(
                    sys.executable, "-m", "services.cli.main", "serve", name, env=env, cwd=REPO,
                    stdout=log, stderr=log))
        deadline = time.monotonic() + 60
        while not reachable(f"tcp://127.0.0.1:{self.grpc_port}") and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
        await asyncio.sleep(3)  # every worker bound to its consumer
        return self

    async def __aexit__(self, *exc: object) -> None:
        for p in self.procs:
            p.terminate()
        await asyncio.gather(*(p.wait() for p in self.procs))


def problem(pid: str) -> problem_pb2.Problem:
    return problem_pb2.Problem(id=pid, kind=problem_pb2.PROBLEM_KIND_MATH, profile="aime2024",
                               text="Find the remainder when the sum of the residues is divided by 1000.")


async def latency_run(nc, tag: str, n: int) -> list[float]:
    walls = []
    await solve(nc, problem(f"warm-{tag}"), timeout_s=60)
    for i in range(n):
        t0 = time.perf_counter()
        result = await solve(nc, problem(f"{tag}-{i}"), timeout_s=60)
        walls.append(time.perf_counter() - t0)
        assert result.stop_reason == "accepted", result
    return walls


async def throughput_run(nc, n: int) -> tuple[float, int]:
    await solve(nc, problem("warm-tp"), timeout_s=60)
    t0 = time.perf_counter()
    results = await asyncio.gather(*(solve(nc, problem(f"tp-{i}"), timeout_s=300) for i in range(n)))
    elapsed = time.perf_counter() - t0
    calls = sum(t.calls for r in results for t in r.tokens)
    return elapsed, calls


async def run_latency(tmp: Path, tag: str, sec: LocalSecurity | None, lat: float, serial: bool, n: int) -> list[float]:
    with NatsServer(store_dir=tmp / f"js-{tag}", security=sec) as ns:
        run_dir = tmp / f"run-{tag}"
        run_dir.mkdir()
        async with Stack(run_dir, ns, lat, 1, serial):
            # A user's program: the public `client` credential.
            nc = await nats.connect(ns.url, **ns.connect_options(permissions.CLIENT))
            walls = await latency_run(nc, tag, n)
            await nc.close()
    return walls


async def run_throughput(tmp: Path, tag: str, sec: LocalSecurity | None, n: int) -> tuple[float, int]:
    with NatsServer(store_dir=tmp / f"js-{tag}", security=sec) as ns:
        run_dir = tmp / f"run-{tag}"
        run_dir.mkdir()
        async with Stack(run_dir, ns, 0.0, 2, False):
            nc = await nats.connect(ns.url, **ns.connect_options(permissions.CLIENT))
            result = await throughput_run(nc, n)
            await nc.close()
    return result


async def compare_security(args: argparse.Namespace, tmp: Path) -> None:
    """Off and on alternate, so that a busy neighbour on a shared machine hurts both alike."""
    lat = args.latency_ms / 1000
    sec = LocalSecurity.ensure(tmp / "security")
    walls: dict[str, list[float]] = {"off": [], "on": []}
    rates: dict[str, list[float]] = {"off": [], "on": []}
    for r in range(args.rounds):
        for mode in ("off", "on"):
            s = sec if mode == "on" else None
            walls[mode] += await run_latency(tmp, f"lat-{mode}-{r}", s, lat, False, args.problems)
            elapsed, calls = await run_throughput(tmp, f"tp-{mode}-{r}", s, args.throughput_problems)
            rates[mode].append(calls / elapsed)
    print(f"security off vs on (TLS + per-role NATS users + gateway mTLS), {args.rounds} alternating rounds")
    print(f"{'':<10} {'p50 wall ms':>12} {'mean wall ms':>13} {'agent calls/s':>14}")
    for mode in ("off", "on"):
        print(f"{mode:<10} {statistics.median(walls[mode]) * 1e3:>12.1f} {statistics.fmean(walls[mode]) * 1e3:>13.1f} "
              f"{statistics.median(rates[mode]):>14.0f}")
    p50 = statistics.median(walls["on"]) / statistics.median(walls["off"])
    mean = statistics.fmean(walls["on"]) / statistics.fmean(walls["off"])
    rate = statistics.median(rates["on"]) / statistics.median(rates["off"])
    print(f"on/off: protocol wall time p50 {p50:.3f} ({(p50 - 1) * 100:+.1f}%), mean {mean:.3f}; "
          f"throughput {rate:.3f} (goal: at most +3% wall time)")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--problems", type=int, default=20, help="problems per latency run")
    parser.add_argument("--throughput-problems", type=int, default=150)
    parser.add_argument("--latency-ms", type=float, default=50.0)
    parser.add_argument("--security", choices=("on", "off"), default="on",
                        help="TLS and per-role users (on, as `conclave up`), or an open bus and gateway")
    parser.add_argument("--compare-security", action="store_true",
                        help="run flows 1 and 3 with security off and on in this run and print the ratios")
    parser.add_argument("--rounds", type=int, default=2, help="alternating off/on rounds of --compare-security")
    args = parser.parse_args()
    lat = args.latency_ms / 1000
    rows = []
    with tempfile.TemporaryDirectory() as tmp_s:
        tmp = Path(tmp_s)
        if args.compare_security:
            await compare_security(args, tmp)
            return
        sec = LocalSecurity.ensure(tmp / "security") if args.security == "on" else None
        for label, serial, stages in (("concurrent critics (ours)", False, 5), ("serial critics (paper's order)", True, 6)):
            walls = await run_latency(tmp, f"lat{int(serial)}", sec, lat, serial, args.problems)
            critical = stages * lat
            rows.append((label, statistics.median(walls), max(walls), critical))
        elapsed, calls = await run_throughput(tmp, "tp", sec, args.throughput_problems)
    critical5 = rows[0][3]
    print(f"aime2024 profile, N=3, {args.latency_ms:.0f} ms per model call, {args.problems} problems one at a time, "
          f"security {args.security}")
    print(f"{'flow':<32} {'p50 wall ms':>12} {'max ms':>9} {'critical path ms':>17} {'p50 / critical path':>20}")
    for label, p50, worst, critical in rows:
        print(f"{label:<32} {p50 * 1e3:>12.1f} {worst * 1e3:>9.1f} {critical * 1e3:>17.1f} {p50 / critical:>20.3f}")
    print(f"serial order / ours (p50): {rows[1][1] / rows[0][1]:.3f}; ours vs the 5-stage critical path: "
          f"{(rows[0][1] / critical5 - 1) * 100:+.1f}%")
    print(f"zero-latency model, 2 replicas per role: {args.throughput_problems} problems, {calls} agent calls in "
          f"{elapsed:.2f}s = {calls / elapsed:.0f} agent calls/s ({args.throughput_problems / elapsed:.1f} problems/s)")


if __name__ == "__main__":
    asyncio.run(main())
