"""The gateway with security on: gRPC mTLS, the API key towards the pods, the ceiling of calls without a ledger.

mTLS and the ceiling run on the scripted backend (deterministic, named as such); the API key on a real CPU pod."""

from __future__ import annotations

import asyncio

import grpc
import httpx
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from conclave.v1 import inference_pb2_grpc
from services.inference.backends.scripted import ScriptedBackend
from services.runtime.settings import RuntimeSettings
from services.security.grpc_tls import gateway_credentials
from services.security.local import LocalSecurity
from services.stack.natsd import free_port
from tests.inference_helpers.gateway import chat, running_gateway
from tests.inference_helpers.pods import start_pod, wait_ready


def mtls_settings(security: LocalSecurity) -> dict:
    cert, key = security.cert("gateway")
    return {"grpc_server_cert": cert, "grpc_server_key": key, "grpc_client_ca": security.ca_file}


def client_credentials(security: LocalSecurity, user: str | None) -> grpc.ChannelCredentials:
    cert, key = security.client_cert(user) if user else (None, None)
    creds = gateway_credentials(RuntimeSettings(gateway_tls_ca=security.ca_file, gateway_tls_cert=cert,
                                                gateway_tls_key=key))
    assert creds is not None
    return creds


async def _call(address: str, credentials: grpc.ChannelCredentials | None) -> str:
    channel = grpc.aio.secure_channel(address, credentials) if credentials else grpc.aio.insecure_channel(address)
    try:
        stub = inference_pb2_grpc.InferenceStub(channel)
        text = ""
        async for resp in stub.Generate(chat("hello", 8), timeout=10):
            text += resp.text
        return text
    finally:
        await channel.close()


async def test_a_role_with_its_certificate_is_served_and_callers_without_one_are_refused(security):
    async with running_gateway(backend=ScriptedBackend(lambda req: "hi there"),
                               channel_credentials=client_credentials(security, "solver"),
                               grpc_health_port=free_port(), **mtls_settings(security)) as gw:
        _, usage = await gw.generate(chat("hello", 8))
        assert usage.completion_tokens > 0
        for creds in (None, client_credentials(security, None)):  # plaintext; TLS without a client cert
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await _call(gw.app.address, creds)
            assert err.value.code() == grpc.StatusCode.UNAVAILABLE
        # A certificate from another CA is not a Conclave service.
        other = LocalSecurity.ensure(security.root.parent / "gateway-other-ca")
        stranger = gateway_credentials(RuntimeSettings(
            gateway_tls_ca=security.ca_file, gateway_tls_cert=other.client_cert("solver")[0],
            gateway_tls_key=other.client_cert("solver")[1]))
        with pytest.raises(grpc.aio.AioRpcError):
            await _call(gw.app.address, stranger)
        # The kubelet's probe: health only, in plaintext, on its own port.
        async with grpc.aio.insecure_channel(f"127.0.0.1:{gw.app.health_port}") as channel:
            status = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
            assert status.status == health_pb2.HealthCheckResponse.SERVING
            with pytest.raises(grpc.aio.AioRpcError) as err:
                async for _ in inference_pb2_grpc.InferenceStub(channel).Generate(chat("x", 4), timeout=5):
                    pass
            assert err.value.code() == grpc.StatusCode.UNIMPLEMENTED


async def test_a_call_without_a_ledger_key_has_a_default_ceiling():
    async with running_gateway(backend=ScriptedBackend(lambda req: "ok"), unledgered_max_tokens=1000) as gw:
        _, usage = await gw.generate(chat("small", 100))
        assert usage.completion_tokens > 0
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await gw.generate(chat("large", 5000))
        assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "ledger_key" in (err.value.details() or "")
        assert gw.metric("conclave_inference_rejections_total", reason="unledgered_ceiling") == 1


@pytest.mark.timeout(180)
async def test_the_pod_requires_its_api_key_and_the_gateway_sends_it(tmp_path, security):
    pod = start_pod(tmp_path, extra_args=("--api-key-file", str(security.pod_api_key_file)))
    try:
        await asyncio.to_thread(wait_ready, [pod], 120)
        async with httpx.AsyncClient(timeout=30) as http:
            body = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
            assert (await http.post(f"{pod.url}/v1/chat/completions", json=body)).status_code == 401
        async with running_gateway([pod.url], pod_api_key_file=security.pod_api_key_file) as gw:
            _, usage = await gw.generate(chat("Say hi.", 4))
            assert usage.completion_tokens > 0
    finally:
        pod.stop()
