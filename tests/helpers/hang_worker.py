"""A worker process that takes a message and never acks it: the test SIGKILLs it mid-work."""

import asyncio

from prometheus_client import CollectorRegistry

from services.bus.deadletter import DeadLetters
from services.bus.topology import ROLE_CONSUMERS
from services.runtime.connection import connect
from services.runtime.settings import RuntimeSettings
from services.runtime.worker import JetStreamWorker, WorkerMetrics
from tests.conftest import FAST


async def main() -> None:
    # The solver's own credential: a worker needs no more than its role's permissions.
    nc = await connect(RuntimeSettings(), "hang-worker", user="solver")
    js = nc.jetstream()
    reg = CollectorRegistry()

    async def handler(ctx):
        print(f"got {ctx.msg.data.decode()} delivery={ctx.deliveries}", flush=True)
        await asyncio.sleep(3600)

    worker = JetStreamWorker(js, ROLE_CONSUMERS["solver"], handler, timing=FAST, concurrency=1,
                             letters=DeadLetters(js, reg), metrics=WorkerMetrics(reg))
    await worker.start()
    await asyncio.sleep(3600)


asyncio.run(main())
