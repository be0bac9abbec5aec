"""Riding out a NATS outage: retry an operation that failed because the connection was down.

nats-py reconnects by itself, but a request made while it does (a JetStream publish, a KV put) fails at
once. Such an operation is retried with backoff until it succeeds or `give_up_s` passes; a JetStream
publish is safe to repeat because every one we make carries a Nats-Msg-Id.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from nats import errors as nats_errors
from nats.js import errors as js_errors

log = logging.getLogger(__name__)
T = TypeVar("T")

# What a lost or reconnecting connection raises; anything else is a real error and is raised at once.
TRANSIENT: tuple[type[BaseException], ...] = (
    nats_errors.ConnectionClosedError,
    nats_errors.ConnectionReconnectingError,
    nats_errors.NoRespondersError,
    nats_errors.TimeoutError,
    nats_errors.StaleConnectionError,
    nats_errors.OutboundBufferLimitError,
    js_errors.ServiceUnavailableError,
    TimeoutError,
)


async def retrying(op: Callable[[], Awaitable[T]], what: str, *, give_up_s: float = 120.0,
                   first_wait_s: float = 0.2, max_wait_s: float = 3.0) -> T:
    """`await op()`, retried on TRANSIENT errors for up to `give_up_s`; then the last error is raised."""
    deadline = time.monotonic() + give_up_s
    wait = first_wait_s
    attempt = 0
    while True:
        attempt += 1
        try:
            return await op()
        except TRANSIENT as exc:
            if time.monotonic() + wait > deadline:
                raise
            if attempt == 2:  # the first retry is routine; a second one means an outage: say so once
                log.warning("%s: NATS unavailable (%r); retrying for up to %.0fs", what, exc, give_up_s)
            await asyncio.sleep(wait)
            wait = min(wait * 2, max_wait_s)
