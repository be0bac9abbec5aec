"""The event loop a service process runs on: uvloop (libuv) by default, Python's own asyncio loop on request
and in a process that starts subprocesses while its gRPC channels are busy (the executor's sandboxes).

Most of a problem's time outside the model is Python work on some process's event loop, hop after hop: the
CEO publishing a task, the role worker fetching it, its gRPC call to the gateway and the reply, the NATS
client writing through TLS. uvloop does the loop's own part of that (sockets, TLS, timers, callbacks) in
C; on the protocol benchmark it took about 6 ms off a problem (250 ms of model time; README, "Measured").
Where uvloop is not installed (it has no Windows build) the process says so and runs on asyncio.

Why not uvloop where subprocesses start: libuv starts a child with fork(), which runs gRPC's fork handlers
while its threads are in use, and gRPC does not support that (grpc/grpc#28557, "TSI_DATA_CORRUPTED after
Popen()"). On the GPU, the executor on uvloop forked its sandboxes 953 times beside a busy TLS channel to the
gateway, and once the channel broke (BAD_DECRYPT, TSI_DATA_CORRUPTED): 72 calls failed at once and were
redelivered (docs/gpu.md, seventh lease). Python's own loop starts children through subprocess, with vfork():
no fork handlers run.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import Any, Literal, TypeVar

log = logging.getLogger(__name__)

Loop = Literal["uvloop", "asyncio"]
Wanted = Literal["auto", "uvloop", "asyncio"]
T = TypeVar("T")


def choose(wanted: Wanted, spawns_processes: bool) -> Loop:
    """`auto`: uvloop, except in a process that starts subprocesses (see above). An explicit choice stands."""
    if wanted == "auto":
        return "asyncio" if spawns_processes else "uvloop"
    return wanted


def for_service(name: str, wanted: Wanted) -> Loop:
    """The loop service `name` runs on (services/registry.py says which services start subprocesses)."""
    from services.registry import SERVICES

    entry = SERVICES.get(name)
    return choose(wanted, entry is not None and entry.spawns_processes)


def runner(wanted: Loop) -> Callable[[Coroutine[Any, Any, T]], T]:
    """The `asyncio.run` that runs a coroutine on the wanted loop (`running()` says which it got)."""
    if wanted == "uvloop":
        try:
            import uvloop
        except ImportError:
            log.warning("event_loop is uvloop but uvloop is not installed; running on asyncio's own loop")
            return asyncio.run
        return uvloop.run
    return asyncio.run


def running() -> Loop:
    """The loop the caller runs on."""
    return "uvloop" if type(asyncio.get_running_loop()).__module__.startswith("uvloop") else "asyncio"
