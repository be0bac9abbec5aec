"""Protocol benchmark: the agent team's end-to-end time against its critical path, and agent calls/s.

Usage: python benchmarks/protocol.py [--problems 20] [--throughput-problems 150] [--tracing-only]
       python benchmarks/protocol.py [--security on|off] | --compare-security [--rounds 2]

Every service runs as its own process (`conclave serve NAME`), as in production; the gateway runs the
scripted backend, so model time is exactly what we set and everything else is Conclave's overhead.
1. aime2024 profile, N=3 (one solver, two critics, consensus in round 1), 50 ms per model call, problems
   one at a time: wall time per problem against the critical path = 5 sequential stages × 50 ms
   (CEO, recruiter, solver, the critics together, evaluator).
2. The same with the paper's serial critic order (CONCLAVE_SERIAL_CRITICS=true): 6 stages.
3. Zero-latency model, 2 replicas of every role and of the CEO, many problems at once: agent calls/s.
4. Tracing: flows 1 and 3 with every service exporting its spans over OTLP to a receiver (its own process),
   against the same flows with tracing off (no OTEL_EXPORTER_OTLP_ENDPOINT), in the order off, on, on, off.
   Goal: at most 2% more wall time.
Security (TLS and per-role users on NATS, mTLS to the gateway) is on, as `conclave up` runs it; --security off
runs flows 1-3 open. --compare-security runs flows 1 and 3 with security off and on, alternating, in one run,
and prints the ratios on/off (goal: at most 3% more wall time).
--baseline DIR runs flows 1 and 3 of an earlier checkout (DIR, with its own `make setup`, run through its own
benchmarks/protocol.py) and of this one, alternating (baseline, ours, baseline, ours, ... --rounds times), and
prints both against the critical path and ours / baseline. For example, against the commit before the
protocol hardening of issue 9:
    git worktree add /tmp/base 3d6c055 && make -C /tmp/base setup
    python benchmarks/protocol.py --baseline /tmp/base --security off --rounds 3
--skip-tracing leaves out flow 4.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import nats  # noqa: E402

from benchmarks.common import REPO, child_env, scripted_stack_env  # noqa: E402
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
    def __init__(self, tmp: Path, ns: NatsServer, latency_s: float, replicas: int, serial: bool,
                 extra_env: dict[str, str] | None = None) -> None:
        self.tmp, self.ns, nats_url = tmp, ns, ns.url
        self.grpc_port = free_port()
        self.env = {**scripted_stack_env(tmp, RULES, nats_url, self.grpc_port, latency_s),
                    "CONCLAVE_SERIAL_CRITICS": str(serial).lower(), **ns.env(), **(extra_env or {})}
        for var in ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"):
            if not (extra_env or {}).get(var):
                self.env.pop(var, None)
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


async def throughput_run(nc, n: int, tag: str = "tp") -> tuple[float, int]:
    await solve(nc, problem(f"warm-{tag}"), timeout_s=60)
    t0 = time.perf_counter()
    results = await asyncio.gather(*(solve(nc, problem(f"{tag}-{i}"), timeout_s=300) for i in range(n)))
    elapsed = time.perf_counter() - t0
    calls = sum(t.calls for r in results for t in r.tokens)
    return elapsed, calls


async def tracing_runs(tmp: Path, args: argparse.Namespace) -> None:
    """Flows 1 and 3 with tracing off and on, in the order off, on, on, off (drift hits both alike), with
    the OTLP receiver in a process of its own."""
    lat = args.latency_ms / 1000
    walls: dict[bool, list[float]] = {False: [], True: []}
    rates: dict[bool, list[float]] = {False: [], True: []}
    port = free_port()
    receiver = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tests.helpers.otlp", str(port), cwd=REPO, stdout=asyncio.subprocess.PIPE,
        env=child_env({}))
    assert receiver.stdout is not None
    await receiver.stdout.readline()  # "ready"
    on_env = {"OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{port}"}
    try:
        for i, traced in enumerate((False, True, True, False)):
            env = on_env if traced else {}
            with NatsServer(store_dir=tmp / f"js-tr{i}", security=LocalSecurity.ensure(tmp / "security")) as ns:
                for flow in ("lat", "tp"):
                    run_dir = tmp / f"run-tr{i}-{flow}"
                    run_dir.mkdir()
                    latency, replicas = (lat, 1) if flow == "lat" else (0.0, 2)
                    async with Stack(run_dir, ns, latency, replicas, False, env):
                        nc = await nats.connect(ns.url, **ns.connect_options(permissions.CLIENT))
                        if flow == "lat":
                            walls[traced] += await latency_run(nc, f"tr{i}", args.problems)
                        else:
                            elapsed, calls = await throughput_run(nc, args.throughput_problems, f"tp{i}")
                            rates[traced].append(calls / elapsed)
                        await nc.close()
    finally:
        receiver.terminate()
        counts = (await receiver.communicate())[0].decode().split()
    spans, traces = (int(counts[0]), int(counts[1])) if len(counts) == 2 else (0, 0)
    off, on = statistics.median(walls[False]), statistics.median(walls[True])
    r_off, r_on = statistics.mean(rates[False]), statistics.mean(rates[True])
    print(f"tracing: {spans} spans in {traces} traces received over OTLP from the traced runs")
    print(f"{'flow':<44} {'off':>10} {'on':>10} {'on / off':>10}")
    print(f"{'p50 wall ms, ' + str(args.latency_ms) + ' ms model, one at a time':<44} {off * 1e3:>10.1f} "
          f"{on * 1e3:>10.1f} {on / off:>10.3f}")
    print(f"{'agent calls/s, zero-latency model':<44} {r_off:>10.0f} {r_on:>10.0f} {r_on / r_off:>10.3f}")
    print(f"each run (off, on, on, off): calls/s {[round(r) for r in (rates[False][0], *rates[True], rates[False][1])]}")
    print(f"wall time with tracing: {(on / off - 1) * 100:+.1f}% (p50, latency flow); throughput "
          f"{(r_on / r_off - 1) * 100:+.1f}% (goal: at most 2% more wall time)")


async def run_latency(tmp: Path, tag: str, sec: LocalSecurity | None, lat: float, n: int) -> list[float]:
    with NatsServer(store_dir=tmp / f"js-{tag}", security=sec) as ns:
        run_dir = tmp / f"run-{tag}"
        run_dir.mkdir()
        async with Stack(run_dir, ns, lat, 1, False):
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
            result = await throughput_run(nc, n, tag)
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
            walls[mode] += await run_latency(tmp, f"lat-{mode}-{r}", s, lat, args.problems)
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


def baseline_run(base: Path, args: argparse.Namespace) -> tuple[float, float, float]:
    """Flows 1 and 3 of the checkout `base`, by its own benchmark in its own venv: (p50 s, max s, calls/s)."""
    python = base / ".venv" / "bin" / "python"
    script = base / "benchmarks" / "protocol.py"
    if not python.exists() or not script.exists():
        raise SystemExit(f"--baseline {base}: needs {script} and {python} (run `make setup` there)")
    usage = subprocess.run([str(python), str(script), "--help"], capture_output=True, text=True, cwd=base).stdout
    cmd = [str(python), str(script), "--problems", str(args.problems), "--throughput-problems",
           str(args.throughput_problems), "--latency-ms", str(args.latency_ms)]
    cmd += ["--security", args.security] if "--security" in usage else []
    cmd += ["--skip-tracing"] if "--skip-tracing" in usage else []
    if args.security == "on" and "--security" not in usage:
        print(f"note: the baseline {base.name} has no --security option: it runs open", flush=True)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["PYTHONUNBUFFERED"] = "1"
    stdout, row, rate = "", None, None
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=base, env=env,
                          start_new_session=True) as proc:
        assert proc.stdout is not None
        for line in proc.stdout:
            stdout += line
            row = row or re.match(r"concurrent critics \(ours\)\s+([\d.]+)\s+([\d.]+)", line)
            rate = rate or re.search(r"= (\d+) agent calls/s", line)
            if row and rate:
                # Done with flows 1-3; a version without --skip-tracing would go on to flow 4: stop it (its
                # services are in its process group, its nats-servers die with their parent).
                os.killpg(proc.pid, signal.SIGTERM)
                break
        proc.wait()
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:  # its services drain; what is left of the group after that is killed
        try:
            os.killpg(proc.pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.5)
    else:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    if not row or not rate:
        raise SystemExit(f"baseline run failed ({proc.returncode}):\n{stdout[-2000:]}")
    return float(row.group(1)) / 1e3, float(row.group(2)) / 1e3, float(rate.group(1))


async def compare_baseline(args: argparse.Namespace, tmp: Path) -> None:
    """The baseline and this checkout alternate, so that a busy neighbour on a shared machine hurts both alike."""
    base = Path(args.baseline).resolve()
    lat = args.latency_ms / 1000
    critical = 5 * lat
    sec = LocalSecurity.ensure(tmp / "security") if args.security == "on" else None
    runs: dict[str, list[tuple[float, float, float]]] = {"baseline": [], "ours": []}
    for r in range(args.rounds):
        runs["baseline"].append(await asyncio.to_thread(baseline_run, base, args))
        walls = await run_latency(tmp, f"lat-{r}", sec, lat, args.problems)
        elapsed, calls = await run_throughput(tmp, f"tp-{r}", sec, args.throughput_problems)
        runs["ours"].append((statistics.median(walls), max(walls), calls / elapsed))
        print(f"round {r + 1}: baseline p50 {runs['baseline'][-1][0] * 1e3:.1f} ms, {runs['baseline'][-1][2]:.0f} "
              f"calls/s; ours p50 {runs['ours'][-1][0] * 1e3:.1f} ms, {runs['ours'][-1][2]:.0f} calls/s", flush=True)
    print(f"baseline {base} vs this checkout, flows 1 and 3, security {args.security}, {args.rounds} alternating "
          f"rounds of {args.problems} problems (medians over rounds; the max is the worst problem of all rounds)")
    print(f"{'':<10} {'p50 wall ms':>12} {'max ms':>9} {'vs 5-stage critical path':>25} {'agent calls/s':>14}")
    med = {}
    for name, rows in runs.items():
        p50 = statistics.median(r[0] for r in rows)
        worst = max(r[1] for r in rows)
        rate = statistics.median(r[2] for r in rows)
        med[name] = (p50, rate)
        print(f"{name:<10} {p50 * 1e3:>12.1f} {worst * 1e3:>9.1f} {(p50 / critical - 1) * 100:>+24.1f}% {rate:>14.0f}")
    p50_ratio = med["ours"][0] / med["baseline"][0]
    rate_ratio = med["ours"][1] / med["baseline"][1]
    print(f"ours / baseline: p50 wall time {p50_ratio:.3f} ({(p50_ratio - 1) * 100:+.1f}%), throughput "
          f"{rate_ratio:.3f}; per-round p50 ratios "
          f"{[round(o[0] / b[0], 3) for o, b in zip(runs['ours'], runs['baseline'], strict=True)]}")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--problems", type=int, default=20, help="problems per latency run")
    parser.add_argument("--throughput-problems", type=int, default=150)
    parser.add_argument("--latency-ms", type=float, default=50.0)
    parser.add_argument("--tracing-only", action="store_true", help="run only the tracing on/off comparison")
    parser.add_argument("--security", choices=("on", "off"), default="on",
                        help="TLS and per-role users (on, as `conclave up`), or an open bus and gateway")
    parser.add_argument("--compare-security", action="store_true",
                        help="run only flows 1 and 3 with security off and on in this run and print the ratios")
    parser.add_argument("--rounds", type=int, default=2,
                        help="alternating rounds of --compare-security (off/on) and --baseline (baseline/ours)")
    parser.add_argument("--baseline", metavar="DIR",
                        help="a checkout of an earlier commit, set up (`make setup`): run only flows 1 and 3 of it "
                             "and of this checkout, alternating, and print the ratios")
    parser.add_argument("--skip-tracing", action="store_true", help="leave out flow 4 (tracing off vs on)")
    args = parser.parse_args()
    lat = args.latency_ms / 1000
    rows = []
    with tempfile.TemporaryDirectory() as tmp_s:
        tmp = Path(tmp_s)
        if args.tracing_only:
            await tracing_runs(tmp, args)
            return
        if args.compare_security:
            await compare_security(args, tmp)
            return
        if args.baseline:
            await compare_baseline(args, tmp)
            return
        sec = LocalSecurity.ensure(tmp / "security") if args.security == "on" else None
        for label, serial, stages in (("concurrent critics (ours)", False, 5), ("serial critics (paper's order)", True, 6)):
            with NatsServer(store_dir=tmp / f"js-{serial}", security=sec) as ns:
                run_dir = tmp / f"run-{serial}"
                run_dir.mkdir()
                async with Stack(run_dir, ns, lat, 1, serial):
                    nc = await nats.connect(ns.url, **ns.connect_options(permissions.CLIENT))
                    walls = await latency_run(nc, f"lat{int(serial)}", args.problems)
                    await nc.close()
            critical = stages * lat
            rows.append((label, statistics.median(walls), max(walls), critical))
        with NatsServer(store_dir=tmp / "js-tp", security=sec) as ns:
            run_dir = tmp / "run-tp"
            run_dir.mkdir()
            async with Stack(run_dir, ns, 0.0, 2, False):
                nc = await nats.connect(ns.url, **ns.connect_options(permissions.CLIENT))
                elapsed, calls = await throughput_run(nc, args.throughput_problems)
                await nc.close()
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
    if not args.skip_tracing:
        with tempfile.TemporaryDirectory() as tmp_s:
            await tracing_runs(Path(tmp_s), args)


if __name__ == "__main__":
    asyncio.run(main())
