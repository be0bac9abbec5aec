"""List the live Conclave services through NATS micro discovery ($SRV.INFO / $SRV.STATS)."""

from __future__ import annotations

import argparse
import asyncio
import os
from pathlib import Path


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--nats-url", default=os.environ.get("CONCLAVE_NATS_URL", "nats://127.0.0.1:4222"))
    p.add_argument("--wait", type=float, default=0.5, help="seconds to collect replies (default 0.5)")


async def _status(url: str, wait: float, state_dir: Path | None = None) -> int:
    from rich.console import Console
    from rich.table import Table

    from services.bus import permissions
    from services.client.connect import connect
    from services.stack.discovery import discover

    try:
        # Discovery ($SRV.PING/INFO/STATS) is an operator's view: the admin credential.
        nc = await connect(url, user=permissions.ADMIN, state_dir=state_dir, connect_timeout=2,
                           max_reconnect_attempts=0, allow_reconnect=False)
    except Exception as exc:
        print(f"conclave status: cannot reach NATS at {url}: {exc}")
        return 1
    try:
        found = await discover(nc, wait)
    finally:
        await nc.close()
    table = Table(title=f"Conclave services at {url}")
    for col in ("service", "instance", "version", "metrics port", "requests", "errors"):
        table.add_column(col)
    for s in found:
        table.add_row(s.name, s.metadata.get("instance", s.id), s.version, s.metadata.get("metrics_port", ""),
                      str(s.requests), str(s.errors))
    Console().print(table)
    if not found:
        print("no services answered")
    return 0


def run(args: argparse.Namespace) -> int:
    return asyncio.run(_status(args.nats_url, args.wait))
