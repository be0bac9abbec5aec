"""The token ledger: per-problem token ceilings in the JetStream KV bucket `conclave_token_ledger`.

Key: the problem id. Value: JSON {"ceiling", "reserved", "committed"} (ceiling 0 = no ceiling). A call
reserves its worst case as it starts (the gateway sends the reservation beside the pod's request and lets no
text out before it is confirmed: gateway.py), commits what it really used when it ends (which also frees
its reservation), or releases the reservation when it fails. Every change is an optimistic-concurrency
update on the entry's last revision, retried on conflict, so gateway replicas and the CEO can share
an entry without a lock. A Ledger remembers the revision it last wrote for each key and first tries
its update on that (one round trip instead of a read and a write); a conflict, or a ceiling reached
on what it remembers, falls back to reading the entry, so a stale memory never decides anything.
Changes one instance makes to one key go one at a time (a lock per key, held only while the key has
writers), so concurrent calls of a problem on one gateway queue for one round trip each instead of
colliding and re-reading. `open` first tries to create the entry (a fresh problem has none: one round
trip), and reads it only when it exists.

`commit_later` (the gateway, once a call's last message is out) settles in the background: it waits
`settle_linger_s`, and a reservation of the same key in the meantime carries the settlement in its own
write (one round trip where there were two). Until it is written the entry holds the call's worst case:
it over-counts, never under-counts, so the ceiling still bounds every problem; this instance decides its
own reservations with its pending settlements applied, and other replicas see the over-count for at most
`settle_linger_s` plus a round trip. `settle_all` writes what is pending (before the process stops); a
crash loses only settlements, leaving their reservations in place (the entry expires with the bucket TTL).
A settlement whose write may have landed without its acknowledgement (a timeout) is never written again
(that could free another call's reservation): it is dropped, and its reservation stays, over-counting.

The CEO opens the entry with the problem's ceiling (`Ledger.open`); a call whose reservation would cross
it gets "token ceiling reached". A call whose key has no entry (no CEO opened it: a direct caller's made-up
key) creates one with `default_ceiling`, the operator's default (the gateway passes its unledgered ceiling),
so naming a key is no way around the ceiling a call without one gets.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
from collections import OrderedDict
from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass, replace

from nats import errors as nats_errors
from nats.js import JetStreamContext
from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from services.bus.topology import TOKEN_LEDGER

log = logging.getLogger(__name__)


class CeilingReached(Exception):
    pass


class LedgerConflict(Exception):
    """Too many concurrent writers on one entry; retrying later may succeed."""


# Failures of a ledger write that certainly wrote nothing (refused, or never sent); any other failure,
# such as a timeout, may have written it.
NOT_WRITTEN: tuple[type[BaseException], ...] = (
    CeilingReached, LedgerConflict, nats_errors.ConnectionClosedError, nats_errors.ConnectionReconnectingError,
    nats_errors.NoRespondersError, nats_errors.OutboundBufferLimitError,
)


@dataclass
class LedgerEntry:
    ceiling: int = 0
    reserved: int = 0
    committed: int = 0

    @property
    def spent(self) -> int:
        return self.committed

    @property
    def available(self) -> int | None:
        """Tokens that can still be reserved; None without a ceiling."""
        return None if not self.ceiling else self.ceiling - self.reserved - self.committed

    def encode(self) -> bytes:
        return json.dumps(asdict(self)).encode()

    @classmethod
    def decode(cls, raw: bytes | None) -> LedgerEntry:
        doc = json.loads(raw or b"{}")
        return cls(int(doc.get("ceiling", 0)), int(doc.get("reserved", 0)), int(doc.get("committed", 0)))


def _settled(e: LedgerEntry, settlement: tuple[int, int]) -> LedgerEntry:
    """The entry with a settlement (reserved tokens to free, tokens used) applied."""
    e.reserved, e.committed = max(0, e.reserved - settlement[0]), e.committed + settlement[1]
    return e


@dataclass(frozen=True)
class Reservation:
    key: str
    tokens: int


class Ledger:
    def __init__(self, js: JetStreamContext, bucket: str = TOKEN_LEDGER.bucket, *, max_attempts: int = 50,
                 remember_max: int = 4096, settle_linger_s: float = 0.5, default_ceiling: int = 0) -> None:
        self._js = js
        self._default_ceiling = default_ceiling
        self._bucket = bucket
        self._kv: KeyValue | None = None
        self._max_attempts = max_attempts
        # key -> (entry, revision) this instance last wrote; bounded, oldest forgotten first.
        self._written: OrderedDict[str, tuple[LedgerEntry, int]] = OrderedDict()
        self._remember_max = remember_max
        # key -> (lock, writers waiting or holding it); an entry lives only while the key has writers.
        self._locks: dict[str, tuple[asyncio.Lock, int]] = {}
        # key -> (reserved tokens to free, tokens used) of settlements not written yet, and their flush.
        self._unsettled: dict[str, tuple[int, int]] = {}
        self._flushes: dict[str, asyncio.Task[None]] = {}  # still lingering
        self._flush_tasks: set[asyncio.Task[None]] = set()  # lingering or writing
        self._settle_linger_s = settle_linger_s

    @contextlib.asynccontextmanager
    async def _one_at_a_time(self, key: str) -> AsyncIterator[None]:
        lock, users = self._locks.get(key, (None, 0))
        lock = lock or asyncio.Lock()
        self._locks[key] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[key]
            if users == 1:
                del self._locks[key]
            else:
                self._locks[key] = (lock, users - 1)

    def _remember(self, key: str, entry: LedgerEntry, revision: int) -> None:
        self._written[key] = (replace(entry), revision)
        self._written.move_to_end(key)
        while len(self._written) > self._remember_max:
            self._written.popitem(last=False)

    async def _store(self) -> KeyValue:
        if self._kv is None:
            # The bucket is declared at start-up (services/stack/declare.py); `js.key_value` would ask the
            # server for its stream first, a round trip for every Ledger the CEO makes (one per problem).
            self._kv = KeyValue(name=self._bucket, stream=f"KV_{self._bucket}", pre=f"$KV.{self._bucket}.",
                                js=self._js, direct=False)
        return self._kv

    async def entry(self, key: str) -> LedgerEntry | None:
        kv = await self._store()
        try:
            got = await kv.get(key)
        except KeyNotFoundError:
            return None
        return LedgerEntry.decode(got.value)

    async def spent(self, key: str) -> int:
        entry = await self.entry(key)
        return entry.committed if entry else 0

    async def open(self, key: str, ceiling: int) -> LedgerEntry:
        """Creates the problem's entry, or sets the ceiling of an existing one (a resumed CEO)."""

        def change(e: LedgerEntry) -> LedgerEntry:
            e.ceiling = ceiling
            return e

        return await self._change(key, change, expect_new=True)

    async def reserve(self, key: str, tokens: int) -> Reservation:
        async with self._one_at_a_time(key):
            pending = self._unsettled.pop(key, None)
            try:
                await self._change_now(key, self._reserving(key, tokens, pending), False)
            except NOT_WRITTEN:
                self._unsettle(key, pending)  # nothing was written: the settlement waits for its flush
                raise
            except BaseException:
                self._drop(key, pending)
                raise
        return Reservation(key, tokens)

    @staticmethod
    def _reserving(key: str, tokens: int, pending: tuple[int, int] | None):  # type: ignore[no-untyped-def]
        def change(e: LedgerEntry) -> LedgerEntry:
            if pending is not None:
                e = _settled(e, pending)
            if e.ceiling and e.committed + e.reserved + tokens > e.ceiling:
                raise CeilingReached(
                    f"token ceiling reached: {e.committed} committed + {e.reserved} reserved + {tokens} "
                    f"requested > ceiling {e.ceiling} for {key}"
                )
            e.reserved += tokens
            return e

        return change

    async def commit(self, reservation: Reservation, used: int) -> LedgerEntry:
        """Records `used` tokens and frees the reservation."""

        def change(e: LedgerEntry) -> LedgerEntry:
            e.reserved = max(0, e.reserved - reservation.tokens)
            e.committed += used
            return e

        return await self._change(reservation.key, change)

    async def release(self, reservation: Reservation) -> LedgerEntry:
        return await self.commit(reservation, 0)

    def commit_later(self, reservation: Reservation, used: int) -> None:
        """As `commit`, written within `settle_linger_s` or with the key's next reservation, if sooner."""
        self._unsettle(reservation.key, (reservation.tokens, used))

    def _unsettle(self, key: str, settlement: tuple[int, int] | None, *, schedule: bool = True) -> None:
        if settlement is None:
            return
        freed, used = self._unsettled.get(key, (0, 0))
        self._unsettled[key] = (freed + settlement[0], used + settlement[1])
        if schedule and key not in self._flushes:
            task = asyncio.get_running_loop().create_task(self._flush(key, self._settle_linger_s))
            self._flushes[key] = task
            self._flush_tasks.add(task)
            task.add_done_callback(self._flush_tasks.discard)

    async def _flush(self, key: str, after_s: float) -> None:
        await asyncio.sleep(after_s)
        self._flushes.pop(key, None)  # from here on, a new settlement schedules a flush of its own
        async with self._one_at_a_time(key):
            pending = self._unsettled.pop(key, None)
            if pending is None:
                return  # a reservation carried it
            try:
                await self._change_now(key, lambda e: _settled(e, pending), False)
            except NOT_WRITTEN as exc:
                # NATS away (or the entry contended): kept, and tried again after another linger.
                log.warning("could not settle ledger entry %s yet: %r", key, exc)
                self._unsettle(key, pending)
            except BaseException:
                self._drop(key, pending)
                raise

    def _drop(self, key: str, settlement: tuple[int, int] | None) -> None:
        """A write that may or may not have landed (a lost acknowledgement): writing the settlement again
        could free another call's reservation, so it is dropped and its reservation stays (over-counts)."""
        if settlement is not None:
            log.warning("ledger entry %s: a settlement of %d reserved tokens may not have been written; the "
                        "reservation stays until the entry expires", key, settlement[0])

    async def settle_all(self) -> None:
        """Writes every pending settlement now (before the process stops)."""
        for task in self._flushes.values():
            task.cancel()  # still lingering: written below instead
        self._flushes.clear()
        await asyncio.gather(*self._flush_tasks, return_exceptions=True)  # those writing finish
        for key in list(self._unsettled):
            async with self._one_at_a_time(key):
                pending = self._unsettled.pop(key, None)
                if pending is None:
                    continue
                try:
                    await self._change_now(key, lambda e, p=pending: _settled(e, p), False)
                except Exception as exc:
                    log.error("could not settle ledger entry %s: its reservation stays until the entry "
                              "expires: %r", key, exc)

    async def _change(self, key: str, change, *, expect_new: bool = False) -> LedgerEntry:  # type: ignore[no-untyped-def]
        async with self._one_at_a_time(key):
            return await self._change_now(key, change, expect_new)

    async def _change_now(self, key: str, change, expect_new: bool) -> LedgerEntry:  # type: ignore[no-untyped-def]
        kv = await self._store()
        written = self._written.pop(key, None)
        if written is not None:
            try:
                new = change(replace(written[0]))
                self._remember(key, new, await kv.update(key, new.encode(), last=written[1]))
                return new
            except (KeyWrongLastSequenceError, CeilingReached):
                pass  # someone else wrote since, or the memory is stale: decide on the entry as it is
        elif expect_new:
            new = change(LedgerEntry())
            try:
                self._remember(key, new, await kv.create(key, new.encode()))
                return new
            except KeyWrongLastSequenceError:
                pass  # it exists (a resumed problem): read it and change it as it is
        for attempt in range(self._max_attempts):
            try:
                got = await kv.get(key)
                entry, revision = LedgerEntry.decode(got.value), got.revision
            except KeyNotFoundError:
                entry, revision = LedgerEntry(ceiling=self._default_ceiling), None
            new = change(entry)
            try:
                if revision is None:
                    written_rev = await kv.create(key, new.encode())
                else:
                    written_rev = await kv.update(key, new.encode(), last=revision)
                self._remember(key, new, written_rev)
                return new
            except KeyWrongLastSequenceError:
                # Someone else wrote first: re-read and re-apply; jitter spreads colliding writers.
                await asyncio.sleep(random.uniform(0, 0.002 * (attempt + 1)))
        raise LedgerConflict(f"ledger entry {key} kept changing; gave up after {self._max_attempts} attempts")
