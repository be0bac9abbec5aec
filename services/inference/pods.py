"""The pod pool: which pods exist (static list or DNS), which are healthy, which are ejected and until when."""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from services.inference.admission import PodSlots

log = logging.getLogger(__name__)


@dataclass(eq=False)
class Pod:
    url: str  # base URL, e.g. http://10.0.0.5:8000 ("scripted://0" for the scripted model)
    name: str  # host:port; the metrics label and Usage.pod
    slots: PodSlots
    healthy: bool = True  # optimistic until the first probe says otherwise: a failed call fails over anyway
    failures: int = 0
    retry_at: float = 0.0  # monotonic time of the next probe of an ejected pod
    failed_probes: int = 0  # health probes failed in a row
    probed_ok: bool = False  # has passed a health probe: until then one failed probe ejects it
    models: tuple[str, ...] = ()


def pod_name(url: str) -> str:
    parts = urlsplit(url)
    return parts.netloc or url


@dataclass
class PodPool:
    limit: int
    queue_limit: int
    eject_base_s: float = 1.0
    eject_max_s: float = 30.0
    _pods: dict[str, Pod] = field(default_factory=dict)
    # Bumped when membership changes, so the router rebuilds its ring.
    version: int = 0

    def __iter__(self) -> Iterator[Pod]:
        return iter(self._pods.values())

    def __len__(self) -> int:
        return len(self._pods)

    def get(self, name: str) -> Pod | None:
        for pod in self._pods.values():
            if pod.name == name:
                return pod
        return None

    def set_urls(self, urls: list[str]) -> None:
        """Adds new pods and forgets vanished ones (their in-flight requests finish on their own)."""
        wanted = list(dict.fromkeys(u.rstrip("/") for u in urls))
        if set(wanted) == set(self._pods):
            return
        added = [u for u in wanted if u not in self._pods]
        removed = [u for u in self._pods if u not in wanted]
        self._pods = {u: self._pods.get(u) or Pod(u, pod_name(u), PodSlots(self.limit, self.queue_limit))
                      for u in wanted}
        self.version += 1
        log.info("pod set changed", extra={"pods_added": added, "pods_removed": removed, "pods": len(self._pods)})

    def healthy(self) -> list[Pod]:
        return [p for p in self._pods.values() if p.healthy]

    def eject(self, pod: Pod, reason: str) -> None:
        """Takes a pod out of rotation; a health probe after the backoff brings it back."""
        pod.failures += 1
        backoff = min(self.eject_base_s * 2 ** (pod.failures - 1), self.eject_max_s)
        pod.retry_at = time.monotonic() + backoff
        if pod.healthy:
            log.warning("pod ejected", extra={"pod": pod.name, "reason": reason, "backoff_s": backoff})
        pod.healthy = False

    def restore(self, pod: Pod) -> None:
        if not pod.healthy:
            log.info("pod back in rotation", extra={"pod": pod.name, "after_failures": pod.failures})
        pod.healthy = True
        pod.failures = 0
        pod.retry_at = 0.0


async def resolve(dns: str, scheme: str, timeout_s: float = 5.0) -> list[str]:
    """name:port -> one URL per address (a headless service answers with every ready pod's IP)."""
    host, _, port = dns.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"pods_dns must be name:port, got {dns!r}")
    loop = asyncio.get_running_loop()
    infos = await asyncio.wait_for(loop.getaddrinfo(host, int(port), type=socket.SOCK_STREAM), timeout_s)
    urls = []
    for family, *_, sockaddr in infos:
        ip = sockaddr[0]
        urls.append(f"{scheme}://[{ip}]:{port}" if family == socket.AF_INET6 else f"{scheme}://{ip}:{port}")
    return sorted(set(urls))
