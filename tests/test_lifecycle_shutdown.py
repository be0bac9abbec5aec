"""A service asked to stop stops, even when its NATS server has gone away."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from services.stack.natsd import find_binary, free_port
from tests.agents.stack import ServiceProcess
from tests.conftest import eventually, fast_env


@pytest.mark.asyncio
async def test_a_service_exits_on_sigterm_while_nats_is_down(nats_server, bus, tmp_path) -> None:
    log = tmp_path / "intake.log"
    intake = ServiceProcess("intake", fast_env(nats_server.env()), log)
    await intake.start()
    assert intake.proc is not None
    try:
        async def ready() -> bool:
            return log.exists() and "intake ready" in log.read_text()

        await eventually(ready, timeout=60, interval=0.2)
        nats_server.kill()

        async def reconnecting() -> bool:
            return "nats error" in log.read_text()

        await eventually(reconnecting, timeout=30, interval=0.2)
        await asyncio.sleep(3)  # into the reconnect attempts, where the client's loop outlived cancellation
        intake.proc.terminate()
        # Generous: the drain is bounded by drain_grace_s (20 s); before the fix the process never exited.
        await asyncio.wait_for(intake.proc.wait(), timeout=60)
    finally:
        intake.kill()
    assert intake.proc.returncode == 0, log.read_text()[-2000:]
    assert "intake stopped" in log.read_text()


@pytest.mark.asyncio
async def test_a_service_waiting_for_jetstream_at_start_up_stops_at_once_on_sigterm(tmp_path) -> None:
    # A server without JetStream: the service's start-up check of the bus waits for it (bus_give_up_s).
    port = free_port()
    plain = await asyncio.create_subprocess_exec(str(find_binary()), "-a", "127.0.0.1", "-p", str(port),
                                                 stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
    log = tmp_path / "intake.log"
    intake = ServiceProcess("intake", {"CONCLAVE_NATS_URL": f"nats://127.0.0.1:{port}",
                                       "CONCLAVE_BUS_GIVE_UP_S": "600"}, log)
    try:
        await intake.start()
        assert intake.proc is not None

        async def waiting() -> bool:
            return log.exists() and "NATS unavailable" in log.read_text()

        await eventually(waiting, timeout=60, interval=0.2)
        intake.proc.terminate()
        await asyncio.wait_for(intake.proc.wait(), timeout=30)  # not the 600 s of its wait
        assert intake.proc.returncode == 0, log.read_text()[-2000:]
        assert "intake stopping before it served" in log.read_text()
    finally:
        intake.kill()
        with contextlib.suppress(ProcessLookupError):
            plain.kill()
