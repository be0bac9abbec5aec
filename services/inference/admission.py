"""Admission control: a bounded number of in-flight requests per pod and a bounded, prioritised queue.

Nothing waits without bound: when every candidate pod has all its slots busy and its queue full, the
request is rejected at once (gRPC RESOURCE_EXHAUSTED) so that callers back off instead of piling up.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from services.inference.pods import Pod


class Rejected(Exception):
    """No pod can take or queue the request."""


class PodSlots:
    """The in-flight slots of one pod and the requests waiting for one (highest priority first, then FIFO)."""

    __slots__ = ("limit", "queue_limit", "inflight", "_waiters", "_seq")

    def __init__(self, limit: int, queue_limit: int) -> None:
        self.limit = limit
        self.queue_limit = queue_limit
        self.inflight = 0
        self._waiters: list[tuple[int, int, asyncio.Future[None]]] = []
        self._seq = itertools.count()

    @property
    def queued(self) -> int:
        return len(self._waiters)

    @property
    def outstanding(self) -> int:
        return self.inflight + len(self._waiters)

    @property
    def saturated(self) -> bool:
        return self.inflight >= self.limit

    @property
    def queue_room(self) -> bool:
        return len(self._waiters) < self.queue_limit

    def try_acquire(self) -> bool:
        # Waiters come first: a newcomer must not overtake a queued request.
        if self.inflight < self.limit and not self._waiters:
            self.inflight += 1
            return True
        return False

    async def wait(self, priority: int) -> None:
        """Queues until a slot is handed over; the caller checked `queue_room`."""
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        entry = (-priority, next(self._seq), fut)
        heapq.heappush(self._waiters, entry)
        try:
            await fut
        except BaseException:
            if fut.done() and not fut.cancelled():
                # The slot was handed to us just as we were cancelled: pass it on.
                self.release()
            else:
                fut.cancel()
                self._remove(entry)
            raise

    def release(self) -> None:
        while self._waiters:
            _, _, fut = heapq.heappop(self._waiters)
            if not fut.done():
                fut.set_result(None)  # the slot moves to the waiter; inflight is unchanged
                return
        self.inflight -= 1

    def resize(self, limit: int, queue_limit: int) -> None:
        self.limit, self.queue_limit = limit, queue_limit

    def _remove(self, entry: tuple[int, int, asyncio.Future[None]]) -> None:
        try:
            self._waiters.remove(entry)
        except ValueError:
            return
        heapq.heapify(self._waiters)


def rejection_message(n_pods: int, limit: int, queue_limit: int) -> str:
    return (
        f"all {n_pods} pods are at their limit of {limit} in-flight + {queue_limit} queued requests; retry later"
    )


async def acquire(candidates: Sequence[Pod], priority: int, *, n_pods: int, limit: int, queue_limit: int) -> Pod:
    """Takes a slot on the first candidate with one free, else queues on the least-queued candidate.

    `candidates` come from the router in order of preference; the pod returned holds a slot that the
    caller must give back with `pod.slots.release()`.
    """
    for pod in candidates:
        if pod.slots.try_acquire():
            return pod
    best: Pod | None = None
    for pod in candidates:
        if pod.slots.queue_room and (best is None or pod.slots.queued < best.slots.queued):
            best = pod
    if best is None:
        raise Rejected(rejection_message(n_pods, limit, queue_limit))
    await best.slots.wait(priority)
    return best
