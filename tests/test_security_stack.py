"""`conclave up`'s stack is secured with no extra step: material made on first run, private files 0600, the
server refuses anonymous clients, a service runs as its own user and a program as `client`."""

from __future__ import annotations

import asyncio
import json
import stat

import nats
import pytest
from google.protobuf import json_format

from conclave.v1 import outcome_pb2
from services.bus import subjects
from services.client.connect import connect
from services.stack.natsd import free_port
from services.stack.up import Stack, StackOptions


@pytest.mark.timeout(120)
async def test_the_local_stack_starts_secured_and_a_program_submits_as_client(tmp_path):
    stack = Stack(StackOptions(state_dir=tmp_path, nats_url=f"nats://127.0.0.1:{free_port()}", services=["intake"]))
    await stack.start()
    try:
        sec = tmp_path / "security"
        assert stat.S_IMODE((sec / "nats" / "client.json").stat().st_mode) == 0o600
        assert stat.S_IMODE((tmp_path / "jetstream" / "nats-server.conf").stat().st_mode) == 0o600
        with pytest.raises((nats.errors.Error, OSError)):
            await nats.connect(stack.nats_url, connect_timeout=3, allow_reconnect=False, max_reconnect_attempts=0)
        nc = await connect(stack.nats_url, state_dir=tmp_path)
        try:
            # The intake (its own process and user) answers an invalid submission with an error result.
            deadline = asyncio.get_running_loop().time() + 60
            while True:
                try:
                    msg = await nc.request(subjects.PROBLEMS_SUBMIT, json.dumps({"id": "x"}).encode(), timeout=2)
                    break
                except (nats.errors.NoRespondersError, nats.errors.TimeoutError):
                    assert asyncio.get_running_loop().time() < deadline, "the intake never answered"
                    await asyncio.sleep(0.5)
            result = outcome_pb2.Result()
            json_format.Parse(msg.data, result)
            assert result.status == "error" and result.error.code
        finally:
            await nc.close()
    finally:
        await stack.stop()
