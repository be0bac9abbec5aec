"""Reading the last message on one subject of a stream (a stored result, trajectory or reply).

A direct get: the stream answers it itself (`allow_direct`, every stream of services/bus/topology.py), instead
of the JetStream API, whose one queue serves every client's stream and consumer requests. In the eighth GPU
lease a vote of 64 problems × 31 samples sent its look-ups through that queue at once; they went unanswered for
their whole timeout (5 s for results, 10 s for trajectories), and each sample whose look-up timed out counted as
an empty vote (docs/results.md).

On a replicated stream any replica may answer a direct get, so a message stored a moment ago can be missing
from the answer (a node back from a crash answers before it has caught up). Clients tolerate that: they look
again while they wait (services/client/solve.py). The stack's own look-ups, which decide what to do next (the
CEO's check for replies that did not arrive, its check for a stored result, a worker's check on a redelivered
task), ask the stream's leader through the API instead (`leader=True`): they are few, and a stale "none" there
costs a redelivery's wait (seen in benchmarks/chaos.py's cluster mode, 4.4x the no-fault time once).
"""

from __future__ import annotations

import asyncio
import logging

from nats.js import JetStreamContext
from nats.js.api import RawStreamMsg
from nats.js.errors import NotFoundError

from services.bus.topology import StreamSpec

log = logging.getLogger(__name__)


async def last_message(js: JetStreamContext, stream: StreamSpec, subject: str, *, attempts: int = 1,
                       backoff_s: float = 1.0, leader: bool = False) -> RawStreamMsg | None:
    """The last message on `subject`, or None when there is none: a direct get, or with `leader` the API's
    get, which the stream's leader answers. A look-up that gets no answer in the context's timeout is tried
    `attempts` times in all (waiting `backoff_s`, then twice that, ...); the last TimeoutError is raised."""
    async def once() -> RawStreamMsg | None:
        try:
            return await js.get_last_msg(stream.name, subject, direct=not leader)
        except NotFoundError:
            return None

    for attempt in range(1, attempts):
        try:
            return await once()
        except TimeoutError:  # nats.errors.TimeoutError is one
            log.warning("%s: JetStream did not answer (attempt %d of %d)", subject, attempt, attempts)
            await asyncio.sleep(backoff_s * 2 ** (attempt - 1))
    return await once()  # the last try: its TimeoutError is the caller's
