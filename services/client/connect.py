"""Connecting a program to Conclave's NATS with its credential: what the CLI and your own code use.

Where the credential comes from, first match wins:
1. CONCLAVE_NATS_PASSWORD (with CONCLAVE_NATS_USER), or CONCLAVE_NATS_CREDENTIALS_DIR/<user>.json;
   CONCLAVE_NATS_TLS_CA names the CA that signed the server's certificate;
2. the state dir of `conclave up` (CONCLAVE_STATE_DIR, default .state): .state/security/nats/<user>.json and
   .state/security/ca.crt;
3. nothing: an anonymous plaintext connection (refused by a server with security on).

    from services.client.connect import connect
    nc = await connect("nats://127.0.0.1:4222")          # as `client`: submit problems, read results
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import nats

from services.bus import permissions
from services.runtime.connection import nats_options
from services.runtime.settings import RuntimeSettings
from services.security.local import LocalSecurity


def default_state_dir() -> Path:
    return Path(os.environ.get("CONCLAVE_STATE_DIR", ".state"))


def options(url: str, user: str = permissions.CLIENT, state_dir: Path | None = None) -> dict[str, Any]:
    """`nats.connect` keyword arguments (credential, inbox prefix, TLS) for `user`."""
    settings = RuntimeSettings(nats_url=url)
    local = LocalSecurity((state_dir or default_state_dir()) / "security")
    if settings.nats_credentials_dir is None and not settings.nats_password.get_secret_value() \
            and local.nats_dir.is_dir():
        settings = settings.model_copy(update={"nats_credentials_dir": local.nats_dir,
                                               "nats_tls_ca": settings.nats_tls_ca or local.ca_file})
    return nats_options(settings, user)


async def connect(url: str, *, user: str = permissions.CLIENT, state_dir: Path | None = None,
                  **kwargs: Any) -> nats.NATS:
    return await nats.connect(url, **options(url, user, state_dir), **kwargs)
