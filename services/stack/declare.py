"""Declares the bus (streams, consumers, KV buckets) as the NATS `admin` user, the only one allowed to.

`conclave up` calls `declare_bus` before it starts the services; in Kubernetes the Job bus-setup runs
`python -m services.stack.declare` with the admin credential (deploy/k8s/base/bus-setup.yaml). Services then
only check the topology at start-up (services/bus/permissions.py gives them read access to it).
"""

from __future__ import annotations

import asyncio
import logging
import sys

import nats

from services.bus import permissions, topology
from services.runtime import logs
from services.runtime.connection import nats_options
from services.runtime.settings import RuntimeSettings

log = logging.getLogger(__name__)


async def declare_bus(settings: RuntimeSettings) -> topology.DeclareReport:
    nc = await nats.connect(settings.nats_url, connect_timeout=settings.nats_connect_timeout_s,
                            **nats_options(settings, permissions.ADMIN))
    try:
        return await topology.declare(nc.jetstream(), settings.bus_timing())
    finally:
        await nc.close()


async def _main(settings: RuntimeSettings, attempts: int = 60) -> int:
    for attempt in range(1, attempts + 1):
        try:
            report = await declare_bus(settings)
        except Exception as exc:  # NATS not up yet, JetStream electing a leader
            log.warning("bus not declared yet (attempt %d/%d): %r", attempt, attempts, exc)
            await asyncio.sleep(min(2.0 * attempt, 10.0))
            continue
        log.info("bus declared", extra={"created": report.created, "updated": report.updated})
        return 0
    log.error("gave up declaring the bus after %d attempts", attempts)
    return 1


def main() -> int:
    settings = RuntimeSettings()
    logs.configure("bus-setup", settings.log_level, settings.log_json)
    return asyncio.run(_main(settings))


if __name__ == "__main__":
    sys.exit(main())
