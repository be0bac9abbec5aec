"""Look-ups of a stored result while the JetStream API is busy: the API's STREAM.MSG.GET (what Conclave used
until the eighth GPU lease) against a direct get (services/bus/lookup.py), in the same run.

    python benchmarks/lookups.py [--results 20000] [--burst 2000] [--noise 4000] [--rounds 3]

Starts its own nats-server with TLS and per-role users (as `conclave up` does), declares the bus, stores
`--results` results, then, each round and each way in turn, sends `--burst` look-ups at once (half of stored
ids, half of ids without a result, as `solve()` asks before it publishes) while another connection keeps
`--noise` JetStream API requests in flight (stream and consumer info, as status pages and start-up checks
send). Prints each way's p50/p99 latency and the burst's wall time, and the ratio direct / API.
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
from nats.js.errors import NotFoundError  # noqa: E402

from benchmarks.common import pct  # noqa: E402
from conclave.v1 import outcome_pb2  # noqa: E402
from services.bus import subjects, topology  # noqa: E402
from services.bus.headers import MSG_ID  # noqa: E402
from services.bus.replies import RESULT_KEY  # noqa: E402
from services.security.local import LocalSecurity  # noqa: E402
from services.stack.natsd import NatsServer  # noqa: E402


async def fill(js, n: int) -> None:
    body = outcome_pb2.Result(status="ok", answer="x" * 1500).SerializeToString()
    for start in range(0, n, 500):
        await asyncio.gather(*(js.publish(subjects.result(f"p-{i}"), body,
                                          headers={MSG_ID: RESULT_KEY.format(problem_id=f"p-{i}")})
                               for i in range(start, min(n, start + 500))))


async def noise(js, in_flight: int, stop: asyncio.Event) -> int:
    """Keeps `in_flight` JetStream API requests outstanding until `stop`; how many were answered."""
    done = 0

    async def one_loop(i: int) -> None:
        nonlocal done
        while not stop.is_set():
            try:
                if i % 2:
                    await js.stream_info(topology.RESULTS.name)
                else:
                    await js.consumer_info(topology.CEO_CONSUMER.stream, topology.CEO_CONSUMER.durable)
                done += 1
            except Exception:  # noqa: BLE001 - a timed-out noise request is still noise
                pass

    await asyncio.gather(*(one_loop(i) for i in range(in_flight)))
    return done


async def burst(js, n: int, stored: int, direct: bool) -> tuple[list[float], float]:
    async def one(i: int) -> float:
        pid = f"p-{i % stored}" if i % 2 else f"missing-{i}"
        t = time.perf_counter()
        try:
            await js.get_last_msg(topology.RESULTS.name, subjects.result(pid), direct=direct)
        except NotFoundError:
            pass
        return time.perf_counter() - t

    t0 = time.perf_counter()
    lat = await asyncio.gather(*(one(i) for i in range(n)))
    return list(lat), time.perf_counter() - t0


async def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--results", type=int, default=20000, help="results stored before the bursts")
    p.add_argument("--burst", type=int, default=2000, help="look-ups sent at once")
    p.add_argument("--noise", type=int, default=4000, help="other JetStream API requests kept in flight")
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        sec = LocalSecurity.ensure(Path(tmp) / "security")
        with NatsServer(store_dir=Path(tmp) / "js", security=sec, log_file=Path(tmp) / "nats.log") as server:
            admin = await nats.connect(server.url, **server.connect_options())
            js = admin.jetstream(timeout=60)
            await topology.declare(js, topology.BusTiming())
            await fill(js, args.results)
            # admin, for both ways: the services may only direct-get now (services/bus/permissions.py)
            client = await nats.connect(server.url, **server.connect_options())
            cjs = client.jetstream(timeout=60)
            other = await nats.connect(server.url, **server.connect_options())
            njs = other.jetstream(timeout=60)
            rows: dict[str, list[tuple[list[float], float]]] = {"api": [], "direct": []}
            for r in range(args.rounds):
                for way in (["api", "direct"] if r % 2 == 0 else ["direct", "api"]):
                    stop = asyncio.Event()
                    noisy = asyncio.ensure_future(noise(njs, args.noise, stop))
                    await asyncio.sleep(0.5)  # the API queue fills first
                    rows[way].append(await burst(cjs, args.burst, args.results, way == "direct"))
                    stop.set()
                    await noisy
            for c in (client, other, admin):
                await c.close()
    print(f"{args.burst} look-ups at once, {args.noise} other JetStream API requests in flight, "
          f"{args.results} results stored, TLS and users on; {args.rounds} rounds")
    summary = {}
    for way, runs in rows.items():
        lat = [x for run, _ in runs for x in run]
        wall = statistics.median(w for _, w in runs)
        summary[way] = (pct(lat, 0.5), pct(lat, 0.99), wall)
        print(f"  {way:<7} p50 {summary[way][0] * 1000:8.1f} ms   p99 {summary[way][1] * 1000:8.1f} ms   "
              f"burst wall (median) {wall:6.2f} s")
    a, d = summary["api"], summary["direct"]
    print(f"direct / api: p50 {d[0] / a[0]:.3f}, p99 {d[1] / a[1]:.3f}, wall {d[2] / a[2]:.3f}")


if __name__ == "__main__":
    asyncio.run(main())
