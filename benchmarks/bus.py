"""Bus round-trip benchmark: task → JetStream work queue → worker → result, against an asyncio.Queue.

Usage: python benchmarks/bus.py [--messages 2000] [--window 64] [--compare-security]

Starts its own nats-server. For 1 and 4 workers, a client keeps `window` tasks outstanding; each task is
published to the TASKS work queue (JetStream, with Nats-Msg-Id), taken by a JetStreamWorker (the same
runtime every Conclave service uses: in-progress keepalive, explicit ack_sync), answered on a result
subject persisted in the REPLIES stream, and timed from publish to result. The baseline runs the same
flow over in-process asyncio queues in the same run. Prints p50/p99 round trip and messages/s, and the
ratio of each to the baseline. --compare-security also runs the bus flow on a second server with TLS and
per-role users (the client as admin, the workers as the solver), alternating with the open one, and prints
the ratio secured/open.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import nats  # noqa: E402
from prometheus_client import CollectorRegistry  # noqa: E402

from benchmarks.common import pct  # noqa: E402
from services.bus import permissions, subjects, topology  # noqa: E402
from services.bus.deadletter import DeadLetters  # noqa: E402
from services.bus.headers import MSG_ID  # noqa: E402
from services.bus.topology import ROLE_CONSUMERS, BusTiming  # noqa: E402
from services.runtime.worker import JetStreamWorker, WorkerMetrics  # noqa: E402
from services.security.local import LocalSecurity  # noqa: E402
from services.stack.natsd import NatsServer  # noqa: E402

TIMING = BusTiming(ack_wait_s=30, max_deliver=5, backoff_s=(30, 60), duplicate_window_s=120)


async def run_queue(messages: int, window: int, workers: int) -> tuple[list[float], float]:
    tasks: asyncio.Queue[tuple[int, bytes]] = asyncio.Queue()
    sent: dict[int, float] = {}
    rtts: list[float] = []
    done = asyncio.Event()
    slots = asyncio.Semaphore(window)

    async def worker() -> None:
        while True:
            n, payload = await tasks.get()
            on_result(n, payload)

    def on_result(n: int, _payload: bytes) -> None:
        rtts.append(time.perf_counter() - sent.pop(n))
        slots.release()
        if len(rtts) == messages:
            done.set()

    runners = [asyncio.create_task(worker()) for _ in range(workers)]
    start = time.perf_counter()
    for n in range(messages):
        await slots.acquire()
        sent[n] = time.perf_counter()
        await tasks.put((n, b"x" * 256))
    await done.wait()
    elapsed = time.perf_counter() - start
    for r in runners:
        r.cancel()
    return rtts, messages / elapsed


async def run_bus(server: NatsServer, messages: int, window: int, workers: int, tag: str) -> tuple[list[float], float]:
    url = server.url
    client = await nats.connect(url, **server.connect_options(permissions.ADMIN))
    js = client.jetstream()
    await js.purge_stream(topology.TASKS.name)
    sent: dict[str, float] = {}
    rtts: list[float] = []
    done = asyncio.Event()
    slots = asyncio.Semaphore(window)

    async def on_result(msg) -> None:
        key = msg.subject.rsplit("-", 1)[-1]  # the step token t0-r0-solver-<key>
        t0 = sent.pop(key, None)
        if t0 is None:
            return
        rtts.append(time.perf_counter() - t0)
        slots.release()
        if len(rtts) == messages:
            done.set()

    await client.subscribe(subjects.replies_of(f"bench{tag}"), cb=on_result)
    conns, ws = [], []
    for _ in range(workers):
        wc = await nats.connect(url, **server.connect_options("solver"))
        wjs = wc.jetstream()
        reg = CollectorRegistry()

        async def handle(ctx, wjs=wjs) -> None:
            key = ctx.msg.headers[MSG_ID]
            # A step key of the solver, as the CEO names them: the solver's user may answer only those.
            await wjs.publish(subjects.reply(f"bench{tag}", f"t0-r0-solver-{key}"), ctx.msg.data,
                              headers={MSG_ID: f"r{key}"})

        w = JetStreamWorker(wjs, ROLE_CONSUMERS["solver"], handle, timing=TIMING, concurrency=max(1, window // workers),
                            letters=DeadLetters(wjs, reg), metrics=WorkerMetrics(reg))
        await w.start()
        conns.append(wc)
        ws.append(w)
    start = time.perf_counter()
    for n in range(messages):
        await slots.acquire()
        key = f"{tag}x{n}"
        sent[key] = time.perf_counter()
        await js.publish(subjects.task("solver"), b"x" * 256, headers={MSG_ID: key})
    await asyncio.wait_for(done.wait(), timeout=300)
    elapsed = time.perf_counter() - start
    for w in ws:
        await w.drain(5)
    for c in conns:
        await c.close()
    await client.close()
    return rtts, messages / elapsed


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--window", type=int, default=64, help="tasks outstanding at once")
    parser.add_argument("--compare-security", action="store_true", help="the bus flow open vs TLS + users")
    parser.add_argument("--rounds", type=int, default=3, help="alternating open/secured rounds")
    args = parser.parse_args()
    if args.compare_security:
        await compare_security(args)
        return
    with tempfile.TemporaryDirectory() as tmp, NatsServer(store_dir=Path(tmp) / "js") as server:
        nc = await nats.connect(server.url)
        await topology.declare(nc.jetstream(), TIMING)
        await nc.close()
        print(f"{'flow':<34} {'workers':>7} {'p50 ms':>9} {'p99 ms':>9} {'msg/s':>9}  {'msg/s vs baseline':>17}")
        for workers in (1, 4):
            base_rtt, base_rate = await run_queue(args.messages, args.window, workers)
            bus_rtt, bus_rate = await run_bus(server, args.messages, args.window, workers, f"w{workers}")
            for name, rtt, rate in (("asyncio.Queue (baseline)", base_rtt, base_rate),
                                    ("JetStream work queue + result", bus_rtt, bus_rate)):
                print(f"{name:<34} {workers:>7} {pct(rtt, .5) * 1e3:>9.3f} {pct(rtt, .99) * 1e3:>9.3f} "
                      f"{rate:>9.0f}  {rate / base_rate:>17.4f}")
            print(f"{'':<34} {'':>7} p50 ratio bus/baseline = {statistics.median(bus_rtt) / statistics.median(base_rtt):.1f}x")


async def compare_security(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as tmp_s:
        tmp = Path(tmp_s)
        sec = LocalSecurity.ensure(tmp / "security")
        servers = {"open": NatsServer(store_dir=tmp / "js-open").start(),
                   "secured": NatsServer(store_dir=tmp / "js-sec", security=sec).start()}
        try:
            for server in servers.values():
                nc = await nats.connect(server.url, **server.connect_options(permissions.ADMIN))
                await topology.declare(nc.jetstream(), TIMING)
                await nc.close()
            rtts: dict[str, list[float]] = {k: [] for k in servers}
            rates: dict[str, list[float]] = {k: [] for k in servers}
            for r in range(args.rounds):
                for mode, server in servers.items():
                    rtt, rate = await run_bus(server, args.messages, args.window, 4, f"{mode}{r}")
                    rtts[mode] += rtt
                    rates[mode].append(rate)
        finally:
            for server in servers.values():
                server.stop()
    print(f"bus flow, 4 workers, window {args.window}, {args.rounds} alternating rounds of {args.messages} messages")
    print(f"{'':<9} {'p50 ms':>9} {'p99 ms':>9} {'msg/s':>9}")
    for mode in servers:
        print(f"{mode:<9} {pct(rtts[mode], .5) * 1e3:>9.3f} {pct(rtts[mode], .99) * 1e3:>9.3f} "
              f"{statistics.median(rates[mode]):>9.0f}")
    print(f"secured/open: p50 round trip {pct(rtts['secured'], .5) / pct(rtts['open'], .5):.3f}, "
          f"msg/s {statistics.median(rates['secured']) / statistics.median(rates['open']):.3f}")


if __name__ == "__main__":
    asyncio.run(main())
