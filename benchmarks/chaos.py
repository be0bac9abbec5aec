"""Chaos benchmark: N problems through the whole stack while things fail, against a no-fault run.

Usage: python benchmarks/chaos.py [--problems 100] [--latency-s 3.0] [--modes none,nats,services,cluster]

Every service runs as its own OS process under the local stack's supervisor (`conclave up` restarts a
crashed one the same way); the gateway runs the scripted backend, so model time is exactly what we set.
Timings are production's (BackOff 10/60/120/300 s, whose first step is the AckWait), not the tests' short ones.

Modes, each a fresh nats-server and stack, in one invocation:
- none:     no fault (the baseline).
- nats:     nats-server SIGKILLed and restarted on the same port and store `--nats-restarts` times.
- services: a random service process SIGKILLed every `--kill-every-s` seconds (the supervisor restarts it).
- cluster:  a 3-node NATS cluster (same wheel, loopback, streams replicated 3 ways); node n0 SIGKILLed
            after `--kill-every-s` and restarted 10 s later.
Then `--malformed` bad payloads of every kind intake refuses: error replies by code, dead letters, crashes.

For each mode it prints results stored, results delivered to a live subscriber of conclave.results.>,
duplicates (a result key seen twice, stored or delivered), problems lost (no result by the end),
trajectories stored, and the wall time against the no-fault run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import nats  # noqa: E402

from benchmarks.common import child_env, scripted_stack_env  # noqa: E402
from benchmarks.protocol import RULES, problem  # noqa: E402
from conclave.v1 import outcome_pb2  # noqa: E402
from services.bus import subjects, topology  # noqa: E402
from services.bus.headers import MSG_ID  # noqa: E402
from services.stack.natsd import NatsServer, find_binary, free_port, nats_answers, reachable  # noqa: E402
from services.stack.supervisor import ProcessSpec, Supervisor, service_argv  # noqa: E402

SERVICES = (("inference", 1), ("intake", 1), ("ceo", 1), ("recruiter", 1), ("solver", 1), ("critic", 2),
            ("evaluator", 1))
KILLABLE = ("intake", "ceo", "recruiter", "solver", "critic", "evaluator")


@dataclass
class Outcome:
    mode: str
    stored: int
    delivered: int
    duplicates: int
    lost: int
    trajectories: int
    wall_s: float
    faults: int


async def wait_ready(nc, grpc_port: int, timeout_s: float = 90) -> None:
    from services.stack.discovery import discover

    deadline = time.monotonic() + timeout_s
    want = sum(n for _, n in SERVICES) - 1  # the gateway does not register on NATS
    while time.monotonic() < deadline:
        if reachable(f"tcp://127.0.0.1:{grpc_port}") and len(await discover(nc, 0.3)) >= want:
            return
        await asyncio.sleep(0.3)
    raise TimeoutError("the stack did not come up")


async def count_stored(js, stream: str, prefix: str) -> dict[str, int]:
    try:
        info = await js.stream_info(stream, subjects_filter=f"{prefix}.>")
    except Exception:
        return {}
    return dict(info.state.subjects or {})


class Cluster:
    """Three nats-servers from the same wheel, clustered on loopback, JetStream replicated 3 ways."""

    def __init__(self, run_dir: Path, size: int = 3) -> None:
        self.dir = run_dir
        self.ports = [free_port() for _ in range(size)]
        self.routes = [free_port() for _ in range(size)]
        self.procs: list[subprocess.Popen[bytes] | None] = [None] * size

    @property
    def url(self) -> str:
        return ",".join(f"nats://127.0.0.1:{p}" for p in self.ports)

    def start(self, i: int | None = None) -> Cluster:
        for n in range(len(self.ports)) if i is None else [i]:
            routes = ", ".join(f'"nats-route://127.0.0.1:{r}"' for j, r in enumerate(self.routes) if j != n)
            conf = self.dir / f"n{n}.conf"
            conf.write_text(f'server_name: "n{n}"\nlisten: "127.0.0.1:{self.ports[n]}"\nmax_payload: 16777216\n'
                            f'jetstream {{ store_dir: "{self.dir / f"js-n{n}"}" }}\n'
                            f'cluster {{ name: "chaos", listen: "127.0.0.1:{self.routes[n]}", routes: [{routes}] }}\n')
            log = open(self.dir / f"n{n}.log", "ab")  # noqa: SIM115
            self.procs[n] = subprocess.Popen([str(find_binary()), "-c", str(conf)], stdout=log, stderr=log,
                                             start_new_session=True)
            log.close()
        deadline = time.monotonic() + 20
        for n in range(len(self.ports)) if i is None else [i]:
            while not nats_answers(f"nats://127.0.0.1:{self.ports[n]}") and time.monotonic() < deadline:
                time.sleep(0.05)
        return self

    def kill(self, i: int = 0) -> None:
        proc = self.procs[i]
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()

    def stop(self) -> None:
        for proc in self.procs:
            if proc is not None and proc.poll() is None:
                proc.terminate()
                proc.wait(10)


async def one_mode(mode: str, args: argparse.Namespace, tmp: Path) -> Outcome:
    run_dir = tmp / mode
    run_dir.mkdir()
    if mode == "cluster":
        server: NatsServer | Cluster = Cluster(run_dir).start()
    else:
        server = NatsServer(store_dir=run_dir / "js", log_file=run_dir / "nats.log", tie_to_parent=False).start()
    grpc_port = free_port()
    env = scripted_stack_env(run_dir, RULES, server.url, grpc_port, args.latency_s)
    if mode == "cluster":
        env["CONCLAVE_STREAM_REPLICAS"] = "3"
    sup = Supervisor(run_dir / "logs", max_backoff_s=2.0, stop_grace_s=5.0)
    for name, replicas in SERVICES:
        for i in range(replicas):
            sup.add(ProcessSpec(name=f"{name}-{i}", argv=service_argv(name), env=env))
    async def quiet(_exc: Exception) -> None:  # refused reconnects while NATS is down are the point here
        pass

    nc = await nats.connect(server.url.split(","), max_reconnect_attempts=-1, reconnect_time_wait=0.5, error_cb=quiet)
    faults = 0
    try:
        await wait_ready(nc, grpc_port)
        js = nc.jetstream()
        deliveries: dict[str, int] = {}

        async def on_result(msg) -> None:
            key = (msg.headers or {}).get(MSG_ID, "")
            deliveries[key] = deliveries.get(key, 0) + 1

        await nc.subscribe(f"{subjects.RESULTS_PREFIX}.>", cb=on_result)
        pids = [f"{mode}-{i}" for i in range(args.problems)]
        t0 = time.perf_counter()
        for pid in pids:
            await nc.publish(subjects.PROBLEMS_SUBMIT, problem(pid).SerializeToString())
        await nc.flush()
        stop_faults = asyncio.Event()
        faulter = asyncio.create_task(inject(mode, args, server, sup, stop_faults))
        deadline = time.monotonic() + args.timeout_s
        stored: dict[str, int] = {}
        while time.monotonic() < deadline:
            stored = await count_stored(js, topology.RESULTS.name, subjects.RESULTS_PREFIX)
            if sum(1 for pid in pids if stored.get(subjects.result(pid))) == len(pids):
                break
            await asyncio.sleep(0.5)
        wall = time.perf_counter() - t0
        stop_faults.set()
        faults = await faulter
        await asyncio.sleep(2.0)  # a duplicate publish would arrive now
        stored = await count_stored(js, topology.RESULTS.name, subjects.RESULTS_PREFIX)
        trajs = await count_stored(js, topology.TRAJECTORIES.name, subjects.TRAJECTORIES_PREFIX)
        got = [pid for pid in pids if stored.get(subjects.result(pid))]
        duplicates = sum(max(0, n - 1) for n in stored.values()) + sum(max(0, n - 1) for n in deliveries.values())
        return Outcome(mode=mode, stored=len(got), delivered=sum(1 for k in deliveries if k.startswith("result:")),
                       duplicates=duplicates, lost=len(pids) - len(got),
                       trajectories=sum(1 for pid in pids if trajs.get(subjects.trajectory(pid))), wall_s=wall,
                       faults=faults)
    finally:
        await nc.close()
        await sup.stop()
        server.stop()


async def inject(mode: str, args: argparse.Namespace, server: NatsServer | Cluster, sup: Supervisor,
                 stop: asyncio.Event) -> int:
    """Faults until `stop`; returns how many were injected."""
    rng = random.Random(args.seed)
    faults = 0

    async def pause(seconds: float) -> bool:
        try:
            await asyncio.wait_for(stop.wait(), seconds)
            return True
        except TimeoutError:
            return False

    if mode == "nats":
        for _ in range(args.nats_restarts):
            if await pause(args.kill_every_s):
                break
            server.kill()
            faults += 1
            print(f"  [{mode}] nats-server SIGKILLed; restarting on the same store", flush=True)
            await asyncio.sleep(args.nats_down_s)
            server.start()
    elif mode == "cluster" and isinstance(server, Cluster):
        if not await pause(args.kill_every_s):
            server.kill(0)
            faults += 1
            print(f"  [{mode}] cluster node n0 SIGKILLed; the other two keep quorum; back in 10 s", flush=True)
            await pause(10.0)
            server.start(0)
    elif mode == "services":
        while not await pause(args.kill_every_s):
            victims = [c for c in sup.children if c.spec.name.split("-")[0] in KILLABLE
                       and c.proc is not None and c.proc.returncode is None]
            if not victims:
                continue
            child = rng.choice(victims)
            child.proc.send_signal(signal.SIGKILL)
            faults += 1
            print(f"  [{mode}] SIGKILLed {child.spec.name}", flush=True)
    return faults


def malformed(i: int) -> bytes:
    """The i-th bad payload, cycling through every kind of bad input intake must refuse."""
    base = {"id": f"bad-{i}", "kind": "PROBLEM_KIND_MATH", "text": "What is 2+3?", "profile": "math500"}
    variants = [
        {"kind": 99}, {"kind": -1}, {"limits": {"deadlineS": "NaN"}}, {"limits": {"deadlineS": "Infinity"}},
        {"limits": {"maxTurns": 2**31 - 1}}, {"limits": {"maxTotalTokens": "1"}},
        {"metadata": {"profile.max_turns": "1000000"}}, {"metadata": {"profile.critic_rounds": "1000000"}},
        {"metadata": {"profile.n_cap": "-5"}}, {"metadata": {"profile.k_cap": "0"}},
        {"profile": "../../deploy/k8s/base/configmap"}, {"text": "x" * 2_000_000}, {"text": ""},
    ]
    n = len(variants) + 2
    if i % n == len(variants):
        return b'{"id": "bad", "kind": '  # not JSON
    if i % n == len(variants) + 1:
        return b"\xff\x00garbage"  # not protobuf
    return json.dumps({**base, **variants[i % n]}).encode()


async def malformed_run(args: argparse.Namespace, tmp: Path) -> None:
    """`--malformed N` bad payloads at intake: an error reply and a dead letter each, and no crash."""
    run_dir = tmp / "malformed"
    run_dir.mkdir()
    server = NatsServer(store_dir=run_dir / "js", log_file=run_dir / "nats.log", tie_to_parent=False).start()
    sup = Supervisor(run_dir / "logs", max_backoff_s=2.0, stop_grace_s=5.0)
    sup.add(ProcessSpec(name="intake-0", argv=service_argv("intake"),
                        env=child_env({"CONCLAVE_NATS_URL": server.url, "CONCLAVE_LOG_LEVEL": "ERROR"})))
    nc = await nats.connect(server.url)
    try:
        from services.stack.discovery import discover

        while not await discover(nc, 0.3):
            await asyncio.sleep(0.3)
        gate = asyncio.Semaphore(50)
        codes: dict[str, int] = {}

        async def send(i: int) -> None:
            async with gate:
                try:
                    reply = await nc.request(subjects.PROBLEMS_SUBMIT, malformed(i), timeout=30)
                    code = json.loads(reply.data)["error"]["code"] if reply.data[:1] == b"{" else \
                        outcome_pb2.Result.FromString(reply.data).error.code
                except Exception as exc:  # no answer is a failure of intake, counted as such
                    code = f"no reply ({type(exc).__name__})"
                codes[code] = codes.get(code, 0) + 1

        t0 = time.perf_counter()
        await asyncio.gather(*(send(i) for i in range(args.malformed)))
        wall = time.perf_counter() - t0
        letters = 0
        for _ in range(40):
            letters = (await nc.jetstream().stream_info(topology.DEADLETTER.name)).state.messages
            if letters >= args.malformed:
                break
            await asyncio.sleep(0.25)
        crashes = sum(c.restarts for c in sup.children)
        print(f"\nmalformed: {args.malformed} payloads in {wall:.1f}s: error replies by code {dict(sorted(codes.items()))}; "
              f"{letters} dead letters; intake crashes {crashes}")
    finally:
        await nc.close()
        await sup.stop()
        server.stop()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--problems", type=int, default=100)
    parser.add_argument("--latency-s", type=float, default=3.0, help="scripted model time per call")
    parser.add_argument("--modes", default="none,nats,services,cluster",
                        help="comma separated; 'none' always runs first")
    parser.add_argument("--nats-restarts", type=int, default=2)
    parser.add_argument("--nats-down-s", type=float, default=1.0, help="how long NATS stays down each time")
    parser.add_argument("--kill-every-s", type=float, default=10.0)
    parser.add_argument("--timeout-s", type=float, default=600.0, help="give up on a mode after this long")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--malformed", type=int, default=1000, help="bad payloads sent at intake (0: skip)")
    args = parser.parse_args()
    modes = ["none"] + [m for m in args.modes.split(",") if m and m != "none"]
    outcomes = []
    with tempfile.TemporaryDirectory() as tmp_s:
        for mode in modes:
            print(f"== {mode}: {args.problems} problems, {args.latency_s:.1f} s per model call", flush=True)
            outcomes.append(await one_mode(mode, args, Path(tmp_s)))
        base = outcomes[0].wall_s
        print(f"\n{'mode':<10} {'faults':>6} {'stored':>7} {'delivered':>10} {'duplicates':>11} {'lost':>5} "
              f"{'trajectories':>13} {'wall s':>8} {'vs no-fault':>12}")
        for o in outcomes:
            print(f"{o.mode:<10} {o.faults:>6} {o.stored:>7} {o.delivered:>10} {o.duplicates:>11} {o.lost:>5} "
                  f"{o.trajectories:>13} {o.wall_s:>8.1f} {o.wall_s / base:>11.2f}x")
        print("delivered: distinct result keys a live subscriber of conclave.results.> received (it may miss "
              "one published while it reconnects; the stored count is what a problem's owner can always read).",
              flush=True)
        if args.malformed:
            await malformed_run(args, Path(tmp_s))

if __name__ == "__main__":
    asyncio.run(main())
