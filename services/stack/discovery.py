"""Finds live services through the NATS micro protocol ($SRV.INFO / $SRV.STATS)."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field

from nats.aio.client import Client


@dataclass
class LiveService:
    name: str
    id: str
    version: str
    description: str
    metadata: dict[str, str] = field(default_factory=dict)
    endpoints: list[dict] = field(default_factory=list)
    requests: int = 0
    errors: int = 0
    # Its JetStream workers' snapshots ({"consumer", "handled": {outcome: n}, "in_flight"}), from STATS.
    work: list[dict] = field(default_factory=list)


async def _gather(nc: Client, subject: str, wait_s: float) -> list[dict]:
    inbox = nc.new_inbox()
    replies: list[dict] = []
    sub = await nc.subscribe(inbox)
    await nc.publish(subject, b"", reply=inbox)
    deadline = asyncio.get_running_loop().time() + wait_s
    try:
        while True:
            left = deadline - asyncio.get_running_loop().time()
            if left <= 0:
                break
            try:
                msg = await sub.next_msg(timeout=left)
            except Exception:
                break
            try:
                replies.append(json.loads(msg.data))
            except ValueError:
                continue
    finally:
        await sub.unsubscribe()
    return replies


async def discover(nc: Client, wait_s: float = 0.5) -> list[LiveService]:
    infos = await _gather(nc, "$SRV.INFO", wait_s)
    stats = {s.get("id"): s for s in await _gather(nc, "$SRV.STATS", wait_s)}
    found = []
    for info in infos:
        st = stats.get(info.get("id"), {})
        eps = st.get("endpoints") or []
        found.append(
            LiveService(
                name=info.get("name", "?"),
                id=info.get("id", "?"),
                version=info.get("version", ""),
                description=info.get("description", ""),
                metadata=info.get("metadata") or {},
                endpoints=info.get("endpoints") or [],
                requests=sum(int(e.get("num_requests", 0)) for e in eps),
                errors=sum(int(e.get("num_errors", 0)) for e in eps),
                work=next((e["data"] for e in eps if e.get("name") == "work" and isinstance(e.get("data"), list)), []),
            )
        )
    return sorted(found, key=lambda s: (s.name, s.id))
