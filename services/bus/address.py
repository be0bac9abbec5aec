"""Where NATS is when nothing says otherwise: the local server `conclave up` starts."""

from __future__ import annotations

import os

DEFAULT_NATS_PORT = 4222
DEFAULT_NATS_URL = f"nats://127.0.0.1:{DEFAULT_NATS_PORT}"
# The variable every service reads (RuntimeSettings.nats_url); the CLI reads it for its --nats-url default.
NATS_URL_ENV = "CONCLAVE_NATS_URL"


def nats_url_from_env() -> str:
    return os.environ.get(NATS_URL_ENV, DEFAULT_NATS_URL)
