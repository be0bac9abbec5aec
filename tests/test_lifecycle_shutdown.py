"""A service asked to stop stops, even when its NATS server has gone away."""

from __future__ import annotations

import asyncio

import pytest

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
