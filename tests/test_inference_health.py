"""Health probes eject a pod only after `health_failure_threshold` failures in a row: a pod busy with hundreds of
streams answered /health late on the GPU, and the gateway took its only pod out of rotation while it served.

Scripted backend: a deterministic pod whose probe answers are set by the test; the gateway and gRPC are real."""

from __future__ import annotations

from services.inference.backends.scripted import ScriptedBackend, ScriptRule
from services.inference.pods import Pod
from tests.inference_helpers.gateway import chat, running_gateway


class _LateHealth(ScriptedBackend):
    """Generates normally; its health probe fails for the pods in `late` (a probe that timed out)."""

    def __init__(self) -> None:
        super().__init__([ScriptRule(pattern="", response="fine")])
        self.late: set[str] = set()

    async def health(self, pod: Pod) -> bool:
        return pod.name not in self.late and await super().health(pod)


async def test_a_pod_that_misses_probes_below_the_threshold_stays_in_rotation_and_serves() -> None:
    backend = _LateHealth()
    async with running_gateway(pods=["scripted://a"], backend=backend, health_interval_s=30.0,
                               health_failure_threshold=3) as gw:
        pod = gw.app.pool.get("a")
        assert pod is not None
        backend.late.add("a")
        for _ in range(2):
            await gw.app.health.probe(pod)
        assert gw.metric("conclave_inference_pod_healthy", backend="a") == 1
        assert gw.metric("conclave_inference_ejections_total", backend="a") == 0
        _, usage = await gw.generate(chat("plain", 5))
        assert usage.pod == "a"

        # A success in between starts the count again.
        backend.late.clear()
        await gw.app.health.probe(pod)
        backend.late.add("a")
        for _ in range(2):
            await gw.app.health.probe(pod)
        assert gw.metric("conclave_inference_pod_healthy", backend="a") == 1


async def test_the_threshold_th_failed_probe_in_a_row_ejects_and_one_success_brings_it_back() -> None:
    backend = _LateHealth()
    async with running_gateway(pods=["scripted://a"], backend=backend, health_interval_s=30.0,
                               health_failure_threshold=3) as gw:
        pod = gw.app.pool.get("a")
        assert pod is not None
        backend.late.add("a")
        for _ in range(3):
            await gw.app.health.probe(pod)
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
    backend = _LateHealth()
    async with running_gateway(pods=["scripted://a"], backend=backend, health_interval_s=30.0,
                               health_failure_threshold=1) as gw:
        pod = gw.app.pool.get("a")
        assert pod is not None
        backend.late.add("a")
        await gw.app.health.probe(pod)
        assert gw.metric("conclave_inference_pod_healthy", backend="a") == 0
