"""Typed failure reasons (agents.proto FailureReason): what the gateway says with an error status reaches
the caller as a reason code, so nobody has to match words in a message. A real gRPC gateway with a
scripted backend (no model needed to refuse a call)."""

from __future__ import annotations

import socket

import pytest

from conclave.v1 import agents_pb2
from services.inference import failures
from services.inference.backends.scripted import ScriptedBackend
from services.inference.client import CallOptions, LlmClient, LlmError
from tests.inference_helpers.gateway import running_gateway


async def _fail(address: str, opts: CallOptions) -> LlmError:
    client = LlmClient(address)
    try:
        with pytest.raises(LlmError) as err:
            await client.generate([("user", "hello")], opts)
        return err.value
    finally:
        await client.close()


async def test_the_gateway_names_the_reason_of_each_refusal() -> None:
    async with running_gateway(backend=ScriptedBackend(lambda req: "ok"), unledgered_max_tokens=1000) as gw:
        client = LlmClient(gw.app.address)
        try:
            assert (await client.generate([("user", "small")], CallOptions(max_tokens=100, timeout_s=30))).completion_tokens > 0
        finally:
            await client.close()
        # Over the cap of a call without a ledger key: the same status code as the problem's ceiling, told
        # apart by its reason.
        over = await _fail(gw.app.address, CallOptions(max_tokens=5000, timeout_s=30))
        assert over.code == "FAILED_PRECONDITION"
        assert over.reason == agents_pb2.FAILURE_REASON_BUDGET_EXHAUSTED
        invalid = await _fail(gw.app.address, CallOptions(max_tokens=0, timeout_s=30))
        assert invalid.code == "INVALID_ARGUMENT"
        assert invalid.reason == agents_pb2.FAILURE_REASON_INVALID_REQUEST
        assert {over.reason, invalid.reason} <= failures.FINAL


async def test_no_gateway_at_all_is_a_pod_unavailable_failure() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    # Nothing listens there: the transport's own UNAVAILABLE, with no reason attached, still gets one.
    err = await _fail(f"127.0.0.1:{port}", CallOptions(max_tokens=10, timeout_s=10))
    assert err.code == "UNAVAILABLE"
    assert err.reason == agents_pb2.FAILURE_REASON_POD_UNAVAILABLE
    assert err.reason not in failures.FINAL


def test_a_reason_in_the_metadata_wins_over_the_code_and_an_unknown_one_is_ignored() -> None:
    ceiling = failures.to_metadata(agents_pb2.FAILURE_REASON_CEILING_REACHED)
    assert failures.from_metadata(ceiling, "UNAVAILABLE") == agents_pb2.FAILURE_REASON_CEILING_REACHED
    assert failures.from_metadata([(failures.METADATA_KEY, "NO_SUCH_REASON")], "DEADLINE_EXCEEDED") == \
        agents_pb2.FAILURE_REASON_TIMEOUT
    assert failures.from_metadata(None, "INTERNAL") == agents_pb2.FAILURE_REASON_BAD_REPLY
