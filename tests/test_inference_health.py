"""Health probes eject a pod only after `health_failure_threshold` failures in a row: a pod busy with hundreds of
streams answered /health late on the GPU, and the gateway took its only pod out of rotation while it served.

Scripted backend: a deterministic pod whose probe answers are set by the test; the gateway and gRPC are real."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from services.inference.backends.scripted import ScriptedBackend, ScriptRule
from services.inference.pods import Pod
from tests.inference_helpers.gateway import RunningGateway, chat, running_gateway


class _LateHealth(ScriptedBackend):
    """Generates normally; its health probe fails for the pods in `late` (a probe that timed out)."""

    def __init__(self) -> None:
        super().__init__([ScriptRule(pattern="", response="fine")])
        self.late: set[str] = set()
        self.probe_gate = asyncio.Event()  # a probe's answer comes when this is set
        self.probe_gate.set()

    async def health(self, pod: Pod) -> bool:
        await self.probe_gate.wait()
        return pod.name not in self.late and await super().health(pod)


@contextlib.asynccontextmanager
async def gateway_with_pod_a(threshold: int, *, late_from_start: bool = False
                             ) -> AsyncIterator[tuple[RunningGateway, _LateHealth, Pod]]:
    """A real gateway (gRPC) in front of one scripted pod "a"; the probes are run by the test, not the timer."""
    backend = _LateHealth()
    if late_from_start:
        backend.late.add("a")
    async with running_gateway(pods=["scripted://a"], backend=backend, health_interval_s=30.0,
                               health_failure_threshold=threshold) as gw:
        pod = gw.app.pool.get("a")
        assert pod is not None
        yield gw, backend, pod


async def probes(gw: RunningGateway, pod: Pod, n: int) -> None:
    for _ in range(n):
        await gw.app.health.probe(pod)


async def serving(gw: RunningGateway) -> int:
    reply = await health_pb2_grpc.HealthStub(gw.channel).Check(health_pb2.HealthCheckRequest(service=""))
    return reply.status


async def test_a_pod_that_misses_probes_below_the_threshold_stays_in_rotation_and_serves() -> None:
    async with gateway_with_pod_a(3) as (gw, backend, pod):
        backend.late.add("a")
        await probes(gw, pod, 2)
        assert gw.metric("conclave_inference_pod_healthy", backend="a") == 1
        assert gw.metric("conclave_inference_ejections_total", backend="a") == 0
        _, usage = await gw.generate(chat("plain", 5))
        assert usage.pod == "a"

        # A success in between starts the count again.
        backend.late.clear()
        await gw.app.health.probe(pod)
        backend.late.add("a")
        await probes(gw, pod, 2)
        assert gw.metric("conclave_inference_pod_healthy", backend="a") == 1


async def test_the_threshold_th_failed_probe_in_a_row_ejects_and_one_success_brings_it_back() -> None:
    async with gateway_with_pod_a(3) as (gw, backend, pod):
        backend.late.add("a")
        await probes(gw, pod, 3)
        assert gw.metric("conclave_inference_pod_healthy", backend="a") == 0
        assert gw.metric("conclave_inference_ejections_total", backend="a") == 1
        # Still failing: stays out, and is not counted as ejected again.
        await gw.app.health.probe(pod)
        assert gw.metric("conclave_inference_ejections_total", backend="a") == 1

        backend.late.clear()
        await gw.app.health.probe(pod)
        assert gw.metric("conclave_inference_pod_healthy", backend="a") == 1
        _, usage = await gw.generate(chat("plain", 5))
        assert usage.pod == "a"


async def test_a_threshold_of_one_ejects_on_the_first_failed_probe() -> None:
    async with gateway_with_pod_a(1) as (gw, backend, pod):
        backend.late.add("a")
        await gw.app.health.probe(pod)
        assert gw.metric("conclave_inference_pod_healthy", backend="a") == 0


async def test_a_pod_down_when_the_gateway_starts_is_out_of_rotation_after_the_first_probe() -> None:
    async with gateway_with_pod_a(3, late_from_start=True) as (gw, backend, pod):
        assert gw.metric("conclave_inference_pod_healthy", backend="a") == 0
        assert await serving(gw) == health_pb2.HealthCheckResponse.NOT_SERVING


async def test_after_a_failed_call_ejects_the_last_pod_the_next_probe_cycle_says_not_serving() -> None:
    async with gateway_with_pod_a(3) as (gw, backend, pod):
        assert await serving(gw) == health_pb2.HealthCheckResponse.SERVING
        backend.down.add("a")  # calls fail; the ejected pod is probed only after its backoff
        with pytest.raises(grpc.aio.AioRpcError):
            await gw.generate(chat("plain", 5))
        await gw.app.health.probe_due()
        assert await serving(gw) == health_pb2.HealthCheckResponse.NOT_SERVING


async def test_a_pod_a_call_ejected_while_its_probe_waited_is_ejected_and_counted_once() -> None:
    async with gateway_with_pod_a(1) as (gw, backend, pod):
        backend.probe_gate.clear()
        backend.late.add("a")
        probing = asyncio.create_task(gw.app.health.probe(pod))
        await asyncio.sleep(0.05)
        backend.down.add("a")
        with pytest.raises(grpc.aio.AioRpcError):
            await gw.generate(chat("plain", 5))
        backend.probe_gate.set()
        await probing
        assert gw.metric("conclave_inference_ejections_total", backend="a") == 1
        assert pod.failures == 1
