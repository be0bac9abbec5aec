"""The token ledger (JetStream KV) on a real nats-server, alone and through the running service."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import nats
import pytest

from conclave.v1 import inference_pb2, inference_pb2_grpc
from services.bus import topology
from services.inference.backends.scripted import ScriptedBackend, ScriptRule
from services.inference.ledger import CeilingReached, Ledger, Reservation
from services.inference.service import InferenceService, build
from services.inference.settings import InferenceSettings
from services.runtime.lifecycle import run
from services.stack.natsd import NatsServer
from tests.conftest import eventually
from tests.inference_helpers.gateway import chat, running_gateway


async def test_reserve_commit_release_and_spent(bus) -> None:  # type: ignore[no-untyped-def]
    ledger = Ledger(bus)
    assert await ledger.entry("p1") is None
    await ledger.open("p1", 1000)
    r1 = await ledger.reserve("p1", 300)
    r2 = await ledger.reserve("p1", 200)
    entry = await ledger.entry("p1")
    assert entry is not None and (entry.ceiling, entry.reserved, entry.committed) == (1000, 500, 0)
    await ledger.commit(r1, 120)
    await ledger.release(r2)
    entry = await ledger.entry("p1")
    assert entry is not None and (entry.reserved, entry.committed) == (0, 120)
    assert await ledger.spent("p1") == 120
    # Re-opening (a resumed CEO) changes the ceiling and keeps what was spent.
    await ledger.open("p1", 2000)
    entry = await ledger.entry("p1")
    assert entry is not None and (entry.ceiling, entry.committed) == (2000, 120)


async def test_ceiling_refuses_a_reservation_that_would_cross_it(bus) -> None:  # type: ignore[no-untyped-def]
    ledger = Ledger(bus)
    await ledger.open("p2", 100)
    await ledger.reserve("p2", 60)
    with pytest.raises(CeilingReached, match="token ceiling reached"):
        await ledger.reserve("p2", 41)
    await ledger.reserve("p2", 40)
    # A Ledger without a default ceiling (not the gateway's) lets a key nobody opened run free, tracked.
    free = await ledger.reserve("p3", 10**6)
    await ledger.commit(free, 7)
    assert await ledger.spent("p3") == 7


async def test_a_key_no_ceo_opened_gets_the_default_ceiling(bus) -> None:  # type: ignore[no-untyped-def]
    # A direct caller naming a made-up ledger_key must not escape the ceiling a call without a key gets.
    ledger = Ledger(bus, default_ceiling=100)
    with pytest.raises(CeilingReached, match="token ceiling reached"):
        await ledger.reserve("made-up", 101)
    await ledger.reserve("made-up", 100)
    entry = await ledger.entry("made-up")
    assert entry is not None and (entry.ceiling, entry.reserved) == (100, 100)
    await ledger.open("opened", 5000)  # a problem the CEO opened keeps its own ceiling
    await ledger.reserve("opened", 4000)


async def test_concurrent_reservations_never_overshoot(bus) -> None:  # type: ignore[no-untyped-def]
    ledgers = [Ledger(bus) for _ in range(5)]  # as if from several gateway replicas
    await ledgers[0].open("p4", 100)

    async def attempt(i: int) -> bool:
        try:
            await ledgers[i % 5].reserve("p4", 10)
            return True
        except CeilingReached:
            return False

    results = await asyncio.gather(*(attempt(i) for i in range(25)))
    assert sum(results) == 10
    entry = await ledgers[0].entry("p4")
    assert entry is not None and entry.reserved == 100


async def test_a_ledger_that_remembers_a_stale_entry_still_decides_on_the_real_one(bus) -> None:  # type: ignore[no-untyped-def]
    """A ledger writes on the revision it last wrote (one round trip); another writer in between makes
    that a conflict, and it re-reads: nothing is lost, and a ceiling is judged on the entry as it is."""
    a, b = Ledger(bus), Ledger(bus)  # two gateway replicas
    await a.open("p6", 100)
    held = await a.reserve("p6", 90)  # a remembers 90 reserved
    await b.commit(held, 10)  # b frees the reservation and commits 10 behind a's back
    # On what a remembers, 80 more would cross the ceiling; on the real entry (10 committed) they fit.
    r = await a.reserve("p6", 80)
    await b.reserve("p6", 5)
    await a.commit(r, 50)  # a's memory is stale again: conflict, re-read, re-applied
    entry = await b.entry("p6")
    assert entry is not None and (entry.reserved, entry.committed) == (5, 60)
    with pytest.raises(CeilingReached):
        await a.reserve("p6", 36)  # 60 + 5 + 36 > 100 on the real entry


async def test_one_ledger_queues_its_own_writers_instead_of_colliding(bus) -> None:  # type: ignore[no-untyped-def]
    """Concurrent calls of one problem on one gateway write one at a time on the revision it remembers:
    with a single attempt allowed, a collision would raise LedgerConflict."""
    ledger = Ledger(bus, max_attempts=1)
    await ledger.open("p7", 1000)
    reservations = await asyncio.gather(*(ledger.reserve("p7", 10) for _ in range(20)))
    await asyncio.gather(*(ledger.commit(r, 5) for r in reservations))
    entry = await ledger.entry("p7")
    assert entry is not None and (entry.reserved, entry.committed) == (0, 100)
    assert not ledger._locks  # no lock outlives its writers


async def test_a_fresh_ledger_reopening_an_entry_keeps_what_was_spent(bus) -> None:  # type: ignore[no-untyped-def]
    first = Ledger(bus)
    await first.open("p8", 100)
    await first.commit(await first.reserve("p8", 50), 30)
    entry = await Ledger(bus).open("p8", 200)  # a restarted CEO: create fails, the entry is read and kept
    assert (entry.ceiling, entry.reserved, entry.committed) == (200, 0, 30)


async def test_a_settlement_rides_on_the_next_reservation_and_never_under_counts(bus) -> None:  # type: ignore[no-untyped-def]
    ledger = Ledger(bus, settle_linger_s=60)  # no flush in this test: only reservations and settle_all write
    await ledger.open("p9", 100)
    first = await ledger.reserve("p9", 60)
    ledger.commit_later(first, 20)
    entry = await ledger.entry("p9")
    assert entry is not None and (entry.reserved, entry.committed) == (60, 0)  # over-counts until written
    # 70 more fit only with the settlement applied (20 + 70 <= 100): the reservation writes both at once.
    second = await ledger.reserve("p9", 70)
    entry = await ledger.entry("p9")
    assert entry is not None and (entry.reserved, entry.committed) == (70, 20)
    ledger.commit_later(second, 10)
    with pytest.raises(CeilingReached):
        await ledger.reserve("p9", 71)  # 30 committed + 71 > 100 even with the settlement applied
    entry = await ledger.entry("p9")
    assert entry is not None and (entry.reserved, entry.committed) == (70, 20)  # a refusal writes nothing
    await ledger.settle_all()
    entry = await ledger.entry("p9")
    assert entry is not None and (entry.reserved, entry.committed) == (0, 30)


async def test_a_settlement_is_written_after_the_linger(bus) -> None:  # type: ignore[no-untyped-def]
    ledger = Ledger(bus, settle_linger_s=0.05)
    await ledger.open("p10", 100)
    ledger.commit_later(await ledger.reserve("p10", 50), 5)

    async def settled() -> bool:
        e = await ledger.entry("p10")
        return e is not None and (e.reserved, e.committed) == (0, 5)

    await eventually(settled, timeout=10)
    assert not ledger._flushes and not ledger._unsettled


@contextlib.asynccontextmanager
async def serving(nats_server: NatsServer, tmp_path: Path, **overrides) -> AsyncIterator[InferenceService]:  # type: ignore[no-untyped-def]
    script = tmp_path / "script.json"
    script.write_text(json.dumps([{"pattern": "count", "response": " ".join(str(i) for i in range(100))},
                                  {"response": "fine thanks"}]))
    # The bus is declared by an admin (as `conclave up` does); the gateway's own user may not create it.
    admin = await nats.connect(nats_server.url, **nats_server.connect_options())
    await topology.declare(admin.jetstream(), topology.BusTiming())
    await admin.close()
    settings = InferenceSettings(**nats_server.settings_kwargs(), backend="scripted", grpc_port=0,
                                 scripted_file=str(script), drain_grace_s=2.0, **overrides)
    service = build(settings)
    stop, started = asyncio.Event(), asyncio.Event()
    task = asyncio.create_task(run(service, stop=stop, started=started))
    await asyncio.wait_for(started.wait(), 15)
    try:
        yield service
    finally:
        stop.set()
        await asyncio.wait_for(task, 15)


async def test_service_accounts_calls_and_enforces_the_ceiling(nats_server: NatsServer, nc, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    async with serving(nats_server, tmp_path, scripted_token_latency_s=0.01, unledgered_max_tokens=1000) as service:
        ledger = Ledger(nc.jetstream())
        await ledger.open("prob-1", 200)
        async with grpc.aio.insecure_channel(f"127.0.0.1:{service.port}") as channel:
            stub = inference_pb2_grpc.InferenceStub(channel)
            usage = None
            async for resp in stub.Generate(chat("how are you", 20, ledger_key="prob-1"), timeout=10):
                usage = resp.usage if resp.HasField("usage") else usage
            assert usage is not None and usage.visible_text == "fine thanks"
            used = usage.prompt_tokens + usage.completion_tokens

            # The gateway commits after the call's last message (off the caller's path): until then the
            # worst case stays reserved, so the entry over-counts for a moment and never under-counts.
            async def committed() -> bool:
                e = await ledger.entry("prob-1")
                assert e is not None and e.committed + e.reserved >= used
                return (e.reserved, e.committed) == (0, used)

            await eventually(committed, timeout=5)
            entry = await ledger.entry("prob-1")
            assert entry is not None

            with pytest.raises(grpc.aio.AioRpcError) as err:
                async for _ in stub.Generate(chat("how are you", 500, ledger_key="prob-1"), timeout=10):
                    pass
            assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
            assert "token ceiling reached" in (err.value.details() or "")

            # Cancelled mid-stream: the reservation is freed, the tokens already produced are counted.
            before = entry.committed
            call = stub.Generate(chat("count for me", 100, ledger_key="prob-1"), timeout=10)
            seen = 0
            async for resp in call:
                seen += bool(resp.text)
                if seen == 5:
                    break
            call.cancel()

            async def settled() -> bool:
                e = await ledger.entry("prob-1")
                return e is not None and e.reserved == 0 and e.committed > before

            await eventually(settled, timeout=5)
            entry = await ledger.entry("prob-1")
            assert entry is not None and entry.committed - before < 100

            # A key no CEO opened gets the gateway's default ceiling (unledgered_max_tokens), not none.
            with pytest.raises(grpc.aio.AioRpcError) as err:
                async for _ in stub.Generate(chat("how are you", 2000, ledger_key="made-up"), timeout=10):
                    pass
            assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
            assert "token ceiling reached" in (err.value.details() or "")
            async for _ in stub.Generate(chat("how are you", 20, ledger_key="made-up"), timeout=10):
                pass
            made_up = await ledger.entry("made-up")
            assert made_up is not None and made_up.ceiling == 1000

            # A call without a ledger key does not touch the KV at all.
            async for _ in stub.Generate(chat("how are you", 5), timeout=10):
                pass
            assert (await ledger.entry("prob-1")) == entry


async def test_service_health_and_drain(nats_server: NatsServer, tmp_path: Path) -> None:
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    async with serving(nats_server, tmp_path) as service:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{service.port}") as channel:
            health = health_pb2_grpc.HealthStub(channel)
            resp = await health.Check(health_pb2.HealthCheckRequest(service="conclave.v1.Inference"), timeout=5)
            assert resp.status == health_pb2.HealthCheckResponse.SERVING
            models = await inference_pb2_grpc.InferenceStub(channel).ListModels(
                inference_pb2.ListModelsRequest(), timeout=5)
            assert models.default_model == "scripted"


def holds(check):  # type: ignore[no-untyped-def]
    """`check` as the awaitable predicate `eventually` takes."""

    async def predicate() -> bool:
        return bool(check())

    return predicate


class HeldLedger:
    """A ledger whose reservations wait for the test's word, to show what the gateway does meanwhile (a
    stand-in for the KV round trip; the real one is tested above)."""

    def __init__(self, *, refuse: bool = False, away: int = 0) -> None:
        self.release = asyncio.Event()
        self.refuse = refuse
        self.away = away  # the first `away` reservations fail as with the KV unreachable
        self.settled: list[tuple[str, int]] = []

    async def reserve(self, key: str, tokens: int) -> Reservation:
        if self.away:
            self.away -= 1
            raise nats.errors.TimeoutError
        await self.release.wait()
        if self.refuse:
            raise CeilingReached(f"token ceiling reached for {key} (held ledger)")
        return Reservation(key, tokens)

    def commit_later(self, reservation: Reservation, used: int) -> None:
        self.settled.append((reservation.key, used))

    async def settle_all(self) -> None:
        return None


async def test_the_pod_starts_while_the_reservation_is_on_its_way_and_nothing_leaves_before_it() -> None:
    backend = ScriptedBackend([ScriptRule("fine thanks")])
    async with running_gateway(backend=backend) as gw:
        gw.app.gateway.ledger = ledger = HeldLedger()  # type: ignore[assignment]
        call = gw.stub.Generate(chat("how are you", 20, ledger_key="prob-1"), timeout=10)
        first = asyncio.ensure_future(call.read())
        await eventually(holds(lambda: len(backend.calls) == 1), timeout=5)  # the pod has the request
        await asyncio.sleep(0.2)
        assert not first.done()  # its text waits for the reservation
        ledger.release.set()
        texts = [(await first).text]
        while (resp := await call.read()) is not grpc.aio.EOF:
            texts.append(resp.text)
        assert "".join(texts) == "fine thanks"
        await eventually(holds(lambda: ledger.settled == [("prob-1", 5)]), timeout=5)  # 3 prompt + 2 completion


async def test_a_refused_reservation_closes_the_pods_request_and_sends_no_text() -> None:
    backend = ScriptedBackend([ScriptRule(" ".join(str(i) for i in range(100)))], token_latency_s=0.01)
    async with running_gateway(backend=backend) as gw:
        gw.app.gateway.ledger = ledger = HeldLedger(refuse=True)  # type: ignore[assignment]
        call = gw.stub.Generate(chat("count for me", 100, ledger_key="prob-1"), timeout=10)
        await eventually(holds(lambda: len(backend.calls) == 1), timeout=5)
        ledger.release.set()
        texts = []
        with pytest.raises(grpc.aio.AioRpcError) as err:
            while (resp := await call.read()) is not grpc.aio.EOF:
                texts.append(resp.text)
        assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "token ceiling reached" in (err.value.details() or "")
        assert texts == [] and ledger.settled == []
        assert gw.metric("conclave_inference_rejections_total", reason="ceiling") == 1
        await eventually(holds(lambda: gw.metric("conclave_inference_in_flight", backend="local") == 0), timeout=5)


async def test_a_refusal_ends_the_call_without_waiting_for_the_pods_first_token() -> None:
    backend = ScriptedBackend([ScriptRule("fine thanks")], latency_s=60.0)  # a first token far away
    async with running_gateway(backend=backend) as gw:
        gw.app.gateway.ledger = ledger = HeldLedger(refuse=True)  # type: ignore[assignment]
        call = gw.stub.Generate(chat("how are you", 20, ledger_key="prob-1"), timeout=20)
        await eventually(holds(lambda: len(backend.calls) == 1), timeout=5)
        ledger.release.set()
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await call.read()
        # Not DEADLINE_EXCEEDED: the refusal did not wait for the pod.
        assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        await eventually(holds(lambda: gw.metric("conclave_inference_in_flight", backend="local") == 0), timeout=5)


async def test_a_refusal_wins_over_a_pod_failure_that_came_first() -> None:
    backend = ScriptedBackend([ScriptRule("fine thanks")])
    async with running_gateway(pods=["scripted://a"], backend=backend, health_interval_s=30.0) as gw:
        backend.down.add("a")
        gw.app.gateway.ledger = ledger = HeldLedger(refuse=True)  # type: ignore[assignment]
        call = gw.stub.Generate(chat("how are you", 20, ledger_key="prob-1"), timeout=10)
        await asyncio.sleep(0.3)  # the pod has failed by now; the reservation is still on its way
        ledger.release.set()
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await call.read()
        # The caller learns the budget is spent (it stops), not that a pod is down (it would retry).
        assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION


async def test_after_the_ledger_failed_the_next_call_reserves_before_it_asks_a_pod() -> None:
    backend = ScriptedBackend([ScriptRule("fine thanks")])
    async with running_gateway(backend=backend) as gw:
        gw.app.gateway.ledger = ledger = HeldLedger(away=1)  # type: ignore[assignment]
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await gw.generate(chat("how are you", 20, ledger_key="prob-1"))
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE
        asked = len(backend.calls)
        call = gw.stub.Generate(chat("how are you", 20, ledger_key="prob-1"), timeout=10)
        reading = asyncio.ensure_future(call.read())
        await asyncio.sleep(0.3)
        assert len(backend.calls) == asked  # the pod waits for the ledger now
        ledger.release.set()
        assert (await reading).text
        while await call.read() is not grpc.aio.EOF:
            pass
        assert len(backend.calls) == asked + 1
        # The ledger answered again: the next call overlaps once more.
        ledger.release.clear()
        call = gw.stub.Generate(chat("how are you", 20, ledger_key="prob-1"), timeout=10)
        reading = asyncio.ensure_future(call.read())
        await eventually(holds(lambda: len(backend.calls) == asked + 2), timeout=5)
        ledger.release.set()
        assert (await reading).text
