"""The inference gateway as a Conclave service: `conclave serve inference`, or `python -m services.inference.service`.

Runs the usual lifecycle (NATS for the token ledger and discovery, /metrics, drain on SIGTERM) around
the gRPC server: on drain the health service turns NOT_SERVING and running calls get `drain_grace_s`.
With CONCLAVE_GATEWAY_WORKERS=N this process is worker 0: it starts workers 1..N-1 on its port (workers.py)
and drains them with itself.
"""

from __future__ import annotations

import asyncio
import sys

from services.inference.app import InferenceApp
from services.inference.settings import InferenceSettings
from services.inference.workers import WorkerSet, worker_index
from services.runtime.lifecycle import Runtime, Service, main


class InferenceService(Service[InferenceSettings]):
    name = "inference"
    description = "The inference gateway: gRPC conclave.v1.Inference in front of the model pods."

    app: InferenceApp | None = None
    workers: WorkerSet | None = None

    async def setup(self, rt: Runtime[InferenceSettings]) -> None:
        s = self.settings
        self.app = InferenceApp(s, rt.registry, js=rt.js)
        await self.app.start()
        rt.spawn(self.app.background(), "inference-upkeep")
        rt.on_close(self.app.close)
        if s.gateway_workers > 1 and worker_index() == 0:
            self.workers = WorkerSet.of_this_process(s.gateway_workers, self.app.port, s.metrics_port, s.instance)
            await self.workers.start()

    async def on_drain(self, rt: Runtime[InferenceSettings]) -> None:
        grace = self.settings.drain_grace_s
        stops = [self.app.drain(grace)] if self.app is not None else []
        if self.workers is not None:
            stops.append(self.workers.stop(grace))
        await asyncio.gather(*stops)

    @property
    def port(self) -> int:
        return self.app.port if self.app is not None else 0


def build(settings: InferenceSettings | None = None) -> InferenceService:
    return InferenceService(settings or InferenceSettings())


if __name__ == "__main__":
    sys.exit(main(build()))
