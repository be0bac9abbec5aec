"""`conclave up` supervises the nats-server it started: killed, it comes back on the same store."""

from __future__ import annotations

import pytest

from services.bus import permissions
from services.client.connect import connect
from services.stack.natsd import free_port
from services.stack.up import Stack, StackOptions
from tests.conftest import eventually

pytestmark = pytest.mark.asyncio


async def test_the_local_stack_restarts_a_killed_nats_server_with_its_store(tmp_path):
    stack = Stack(StackOptions(state_dir=tmp_path, nats_url=f"nats://127.0.0.1:{free_port()}", services=[]))
    await stack.start()
    try:
        assert stack.nats is not None
        nc = await connect(stack.nats_url, user=permissions.ADMIN, state_dir=tmp_path)
        js = nc.jetstream()
        await js.add_stream(name="KEEP", subjects=["keep.>"])
        await js.publish("keep.one", b"stored before the crash")
        await nc.close()
        first_pid = stack.nats.proc.pid
        stack.nats.kill()

        async def restarted() -> bool:
            proc = stack.nats.proc
            return proc is not None and proc.pid != first_pid and proc.poll() is None

        await eventually(restarted, timeout=30, interval=0.2)
        assert stack.nats_restarts == 1
        nc = await connect(stack.nats_url, user=permissions.ADMIN, state_dir=tmp_path)
        msg = await nc.jetstream().get_last_msg("KEEP", "keep.one")
        await nc.close()
        assert msg.data == b"stored before the crash"
    finally:
        await stack.stop()
    assert stack.nats.proc.poll() is not None  # stopped with the stack, not restarted
