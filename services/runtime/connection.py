"""The NATS connection every service uses: reconnect forever with backoff, and say so in the logs."""

from __future__ import annotations

import logging

from nats.aio.client import Client

from services.runtime.settings import RuntimeSettings

log = logging.getLogger(__name__)


async def connect(settings: RuntimeSettings, name: str) -> Client:
    nc = Client()

    async def on_disconnect() -> None:
        if nc.is_closed or nc.is_draining:
            return  # our own shutdown, not an outage
        log.warning("nats disconnected; reconnecting", extra={"nats_url": settings.nats_url})

    async def on_reconnect() -> None:
        log.info("nats reconnected", extra={"nats_url": settings.nats_url})

    async def on_error(err: Exception) -> None:
        log.warning("nats error: %s", err)

    async def on_closed() -> None:
        log.info("nats connection closed")

    await nc.connect(
        servers=[s.strip() for s in settings.nats_url.split(",")],
        name=name,
        connect_timeout=settings.nats_connect_timeout_s,
        max_reconnect_attempts=settings.nats_max_reconnect_attempts,
        reconnect_time_wait=settings.nats_reconnect_wait_s,
        allow_reconnect=True,
        disconnected_cb=on_disconnect,
        reconnected_cb=on_reconnect,
        error_cb=on_error,
        closed_cb=on_closed,
    )
    return nc
