"""Reading the last message on one subject of a stream (a stored result, trajectory or reply).

A direct get: the stream answers it itself (`allow_direct`, every stream of services/bus/topology.py), instead
of the JetStream API, whose one queue serves every client's stream and consumer requests. In the eighth GPU
lease a vote of 64 problems × 31 samples sent its look-ups through that queue at once; they went unanswered for
their whole timeout (5 s for results, 10 s for trajectories), and each sample whose look-up timed out counted as
an empty vote (docs/results.md).

On a replicated stream any replica may answer, so a message stored a moment ago can be missing from the answer.
Every caller tolerates that: the client looks again while it waits (services/client/solve.py); a CEO that finds
no stored result publishes it again (deduplicated by its key); a worker that finds no stored reply answers again
(the CEO keeps the first reply of a step).
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
                       backoff_s: float = 1.0) -> RawStreamMsg | None:
    """The last message on `subject`, or None when there is none. A lookup that gets no answer in the
    context's timeout is tried `attempts` times in all (waiting `backoff_s`, then twice that, ...); the last
    TimeoutError is raised."""
    for attempt in range(1, attempts + 1):
        try:
            return await js.get_last_msg(stream.name, subject, direct=True)
        except NotFoundError:
            return None
        except TimeoutError:  # nats.errors.TimeoutError is one
            if attempt == attempts:
                raise
            log.warning("%s: JetStream did not answer (attempt %d of %d)", subject, attempt, attempts)
            await asyncio.sleep(backoff_s * 2 ** (attempt - 1))
    raise AssertionError("attempts must be at least 1")
