"""The inference gateway as a Conclave service: `conclave serve inference`, or `python -m services.inference.service`.

Runs the usual lifecycle (NATS for the token ledger and discovery, /metrics, drain on SIGTERM) around
the gRPC server: on drain the health service turns NOT_SERVING and running calls get `drain_grace_s`.
"""

from __future__ import annotations

import sys

from services.inference.app import InferenceApp
from services.inference.settings import InferenceSettings
from services.runtime.lifecycle import Runtime, Service, main


class InferenceService(Service[InferenceSettings]):
    name = "inference"
    description = "The inference gateway: gRPC conclave.v1.Inference in front of the model pods."

    app: InferenceApp | None = None

    async def setup(self, rt: Runtime[InferenceSettings]) -> None:
        self.app = InferenceApp(self.settings, rt.registry, js=rt.js)
        await self.app.start()
        rt.spawn(self.app.background(), "inference-upkeep")
        rt.on_close(self.app.close)

    async def on_drain(self, rt: Runtime[InferenceSettings]) -> None:
        if self.app is not None:
            await self.app.drain(self.settings.drain_grace_s)

    @property
    def port(self) -> int:
        return self.app.port if self.app is not None else 0


def build(settings: InferenceSettings | None = None) -> InferenceService:
    return InferenceService(settings or InferenceSettings())


if __name__ == "__main__":
    sys.exit(main(build()))
