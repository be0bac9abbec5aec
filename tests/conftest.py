"""Shared fixtures: a real nats-server per test on a free loopback port, JetStream in a temp dir.

The server runs as `conclave up` runs it: TLS with a local CA and one user per role with least-privilege
permissions (services/bus/permissions.py). Test code connects as `admin`; services get their own credential
from `nats_server.env()`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import nats
import pytest

from services.bus import topology
from services.bus.topology import BusTiming
from services.security.local import LocalSecurity
from services.stack.natsd import NatsServer, find_binary, free_port, nats_answers

# CI machines without user namespaces (a container under the default seccomp profile) only have the
# sandbox's weak mode, which refuses code unless opted into; the suite opts in (services spawned by the
# tests inherit it). Where namespaces work, "auto" still picks them. test_sandbox_escapes checks the refusal.
os.environ.setdefault("CONCLAVE_SANDBOX_ALLOW_WEAK", "1")

# Short timings so that redelivery and dead-lettering happen within a test's patience.
FAST = BusTiming(ack_wait_s=1.0, max_deliver=3, backoff_s=(1.0, 1.0, 1.0), duplicate_window_s=60.0)
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def security(tmp_path_factory: pytest.TempPathFactory) -> LocalSecurity:
    """One local CA and set of credentials for the whole run (generating them takes milliseconds anyway)."""
    return LocalSecurity.ensure(tmp_path_factory.mktemp("security"))


@pytest.fixture
def nats_server(tmp_path: Path, security: LocalSecurity) -> Iterator[NatsServer]:
    server = NatsServer(store_dir=tmp_path / "js", log_file=tmp_path / "nats.log", security=security)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
async def nc(nats_server: NatsServer) -> AsyncIterator[nats.NATS]:
    client = await nats.connect(nats_server.url, **nats_server.connect_options())
    try:
        yield client
    finally:
        with contextlib.suppress(Exception):
            await client.close()


@pytest.fixture
async def bus(nc: nats.NATS):
    """A declared topology with fast timings; returns the JetStream context."""
    js = nc.jetstream()
    await topology.declare(js, FAST)
    return js


def fast_env(nats_env: dict[str, str]) -> dict[str, str]:
    """Environment for service processes that must use the same fast timings as `FAST`; `nats_env` is
    `NatsServer.env()` (URL, credentials, CA)."""
    return {
        **nats_env,
        "CONCLAVE_ACK_WAIT_S": str(FAST.ack_wait_s),
        "CONCLAVE_MAX_DELIVER": str(FAST.max_deliver),
        "CONCLAVE_BACKOFF_S": "[" + ",".join(str(b) for b in FAST.backoff_s) + "]",
        "CONCLAVE_DUPLICATE_WINDOW_S": str(FAST.duplicate_window_s),
        "CONCLAVE_LOG_JSON": "true",
    }


async def eventually(predicate, timeout: float = 10.0, interval: float = 0.05):
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        value = await predicate()
        if value:
            return value
        if loop.time() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        await asyncio.sleep(interval)


@pytest.fixture
def agent_stack(nats_server, tmp_path):  # type: ignore[no-untyped-def]
    """Starts the agent services against this test's bus: `async with agent_stack(script) as stack`."""
    from tests.agents.env import agent_stack_factory  # the stack's imports only where a test uses it

    return agent_stack_factory(nats_server, tmp_path)


@pytest.fixture
def plain_nats():
    """A real nats-server without JetStream (no store, no users): its URL."""
    port = free_port()
    server = subprocess.Popen([str(find_binary()), "-a", "127.0.0.1", "-p", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"nats://127.0.0.1:{port}"
    try:
        for _ in range(200):
            if nats_answers(url):
                break
            time.sleep(0.05)
        yield url
    finally:
        server.terminate()
        server.wait(timeout=10)
