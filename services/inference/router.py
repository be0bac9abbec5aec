"""Routing: consistent hashing on the session key with bounded load.

A discussion's calls share a long prefix, so sending them to the same pod keeps its prefix cache warm.
The session key (the problem id) picks a pod on a hash ring; if that pod is ejected, unhealthy or has
all its slots busy, the call goes to the healthy pod with the fewest outstanding requests instead.
A call without a key is routed by its prompt's leading text instead (affinity_key), so calls that share
a long prefix still meet one pod's cache; only a call with neither goes to the least loaded pod.
"""

from __future__ import annotations

import bisect
import hashlib
import itertools
from collections.abc import Iterable, Iterator

from services.inference.backends.base import GenRequest
from services.inference.pods import Pod, PodPool

# How much of a keyless call's prompt names its prefix: the system prompt and the start of the
# conversation, which is what a pod's prefix cache can reuse between such calls.
PREFIX_CHARS = 2048


def _hash(text: str) -> int:
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big")


def affinity_key(session_key: str, req: GenRequest) -> str:
    """What a call is routed by: its session key (the agents send the problem id) when it has one, else
    a hash of its prompt's first PREFIX_CHARS characters; "" (least loaded pod) for an empty prompt."""
    if session_key:
        return session_key
    head = "".join(f"{m.role}\x00{m.content}\x00" for m in req.messages) if req.messages else req.prompt
    head = head[:PREFIX_CHARS]
    return f"prefix:{_hash(head):016x}" if head else ""


def placement(key: str, home: Pod | None, pod: Pod) -> tuple[str, str]:
    """(by, outcome) labels of a placed call: what routed it (session, prefix, none) and whether it got
    its home pod (home) or another (moved: the home was full); a call without a key has no home."""
    if not key or home is None:
        return "none", "none"
    return ("prefix" if key.startswith("prefix:") else "session"), ("home" if pod is home else "moved")


class HashRing:
    """`vnodes` points per pod; adding or removing a pod moves only ~1/N of the keys."""

    def __init__(self, names: Iterable[str], vnodes: int = 128) -> None:
        points = sorted((_hash(f"{name}#{i}"), name) for name in set(names) for i in range(vnodes))
        self._hashes = [h for h, _ in points]
        self._names = [n for _, n in points]
        self._distinct = len(set(self._names))

    def walk(self, key: str) -> Iterator[str]:
        """Pod names in ring order from the key's position, each once."""
        if not self._hashes:
            return
        start = bisect.bisect(self._hashes, _hash(key))
        seen: set[str] = set()
        n = len(self._names)
        for i in range(n):
            name = self._names[(start + i) % n]
            if name not in seen:
                seen.add(name)
                yield name
                if len(seen) == self._distinct:
                    return


class Router:
    def __init__(self, pool: PodPool, vnodes: int = 128) -> None:
        self._pool = pool
        self._vnodes = vnodes
        self._ring = HashRing((), vnodes)
        self._by_name: dict[str, Pod] = {}
        self._ring_version = -1
        self._rotation = itertools.count()

    def _current_ring(self) -> HashRing:
        if self._ring_version != self._pool.version:
            self._ring = HashRing((p.name for p in self._pool), self._vnodes)
            self._by_name = {p.name: p for p in self._pool}
            self._ring_version = self._pool.version
        return self._ring

    def home(self, key: str, exclude: frozenset[Pod] | set[Pod] = frozenset()) -> Pod | None:
        """The pod a session key belongs to: the first healthy, not excluded pod clockwise on the ring."""
        ring = self._current_ring()
        for name in ring.walk(key):
            pod = self._by_name.get(name)
            if pod is not None and pod.healthy and pod not in exclude:
                return pod
        return None

    def candidates(self, key: str, exclude: frozenset[Pod] | set[Pod] = frozenset(),
                   prefer: Pod | None = None) -> list[Pod]:
        """Healthy pods in the order admission should try them."""
        healthy = [p for p in self._pool if p.healthy and p not in exclude]
        if not healthy:
            return []
        preferred = prefer if prefer is not None and prefer in healthy else (self.home(key, exclude) if key else None)
        # Rotate before sorting so that ties in load do not always land on the same pod.
        shift = next(self._rotation) % len(healthy)
        rotated = healthy[shift:] + healthy[:shift]
        by_load = sorted(rotated, key=lambda p: p.slots.outstanding)
        if preferred is None:
            return by_load
        # Bounded load: admission takes the first candidate with a free slot, so a home pod whose slots
        # are all busy loses the call to the least loaded pod; when every pod is busy, the home pod wins
        # ties for the shortest queue.
        return [preferred, *(p for p in by_load if p is not preferred)]
