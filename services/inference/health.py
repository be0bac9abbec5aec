"""Background upkeep of the pod pool: health probes (which bring ejected pods back) and DNS refresh."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from services.inference.backends.base import Backend, PodError
from services.inference.pods import Pod, PodPool, resolve

log = logging.getLogger(__name__)


class HealthChecker:
    def __init__(self, pool: PodPool, backend: Backend, *, interval_s: float, failure_threshold: int = 1,
                 on_ejected: Callable[[Pod], None] | None = None,
                 after_cycle: Callable[[], Awaitable[None]] | None = None) -> None:
        self._pool = pool
        self._backend = backend
        self._interval_s = interval_s
        self._failure_threshold = failure_threshold
        self._on_ejected = on_ejected
        self._after_cycle = after_cycle

    async def probe(self, pod: Pod) -> None:
        was = pod.healthy
        if await self._backend.health(pod):
            pod.failed_probes, pod.probed_ok = 0, True
            if not was or not pod.models:
                await self._load_models(pod)
            self._pool.restore(pod)
        else:
            pod.failed_probes += 1
            if was and not pod.healthy:
                pass  # a failed call ejected it while the probe waited: ejected and counted there
            elif not pod.healthy:
                self._pool.eject(pod, "health check failed")  # still down: a longer backoff
            elif not pod.probed_ok or pod.failed_probes >= self._failure_threshold:
                # A pod that never answered a probe (down at start, or new from DNS) goes out at once.
                self._pool.eject(pod, "health check failed")
                if self._on_ejected is not None:
                    self._on_ejected(pod)
            else:
                log.warning("health probe failed; pod kept in rotation until it fails "
                            f"{self._failure_threshold} in a row",
                            extra={"pod": pod.name, "failed_probes": pod.failed_probes})

    async def probe_due(self) -> None:
        """Probes healthy pods, and ejected pods whose backoff has passed; then says again whether the
        gateway serves (a failed call may have ejected the last pod in rotation since the last cycle)."""
        now = time.monotonic()
        due = [p for p in self._pool if p.healthy or now >= p.retry_at]
        await asyncio.gather(*(self.probe(p) for p in due), return_exceptions=True)
        if self._after_cycle is not None:
            await self._after_cycle()

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self._interval_s)
            await self.probe_due()

    async def _load_models(self, pod: Pod) -> None:
        try:
            pod.models = tuple(await self._backend.list_models(pod))
        except PodError as exc:
            log.warning("could not list models", extra={"pod": pod.name, "error": str(exc)})


async def refresh_dns(pool: PodPool, dns: str, scheme: str) -> None:
    try:
        urls = await resolve(dns, scheme)
    except (OSError, TimeoutError, ValueError) as exc:
        # Keep the pods we know: a DNS hiccup must not empty the pool.
        log.warning("pod DNS lookup failed; keeping the current pods", extra={"dns": dns, "error": repr(exc)})
        return
    if urls:
        pool.set_urls(urls)


async def dns_loop(pool: PodPool, dns: str, scheme: str, interval_s: float) -> None:
    while True:
        await asyncio.sleep(interval_s)
        await refresh_dns(pool, dns, scheme)
