"""The NATS connection every service uses: TLS and its own credential, reconnect forever with backoff, and say
so in the logs."""

from __future__ import annotations

import logging
import ssl
from pathlib import Path
from typing import Any

from nats.aio.client import Client

from services.bus import permissions
from services.runtime.settings import RuntimeSettings
from services.security.local import NatsCredential

log = logging.getLogger(__name__)


class _TlsCloseNoise(logging.Filter):
    """asyncio warns "returning true from eof_received() has no effect when using ssl" each time a TLS peer
    closes a NATS connection (nats-py's protocol returns True); it is harmless and would flood every log."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "eof_received()" not in record.getMessage()


logging.getLogger("asyncio").addFilter(_TlsCloseNoise())


class MissingCredential(RuntimeError):
    pass


def tls_context(ca_file: Path, cert: tuple[Path, Path] | None = None) -> ssl.SSLContext:
    """Verifies the server against `ca_file` (hostname included); `cert` adds a client certificate (mTLS)."""
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(ca_file))
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if cert is not None:
        ctx.load_cert_chain(str(cert[0]), str(cert[1]))
    return ctx


def nats_options(settings: RuntimeSettings, user: str) -> dict[str, Any]:
    """Keyword arguments of `nats.connect` for `user` (settings.nats_user overrides it): password, inbox
    prefix and TLS. Empty when no credential and no CA is configured."""
    user = settings.nats_user or user
    password = settings.nats_password.get_secret_value()
    if not password and settings.nats_credentials_dir is not None:
        path = settings.nats_credentials_dir / f"{user}.json"
        if not path.exists():
            raise MissingCredential(f"no NATS credential for user {user!r} at {path} "
                                    f"(`conclave up` creates them; known users: {', '.join(permissions.USERS)})")
        password = NatsCredential.load(path).password
    opts: dict[str, Any] = {}
    if password:
        # Each user may only read its own inbox subtree (services/bus/permissions.py).
        opts.update(user=user, password=password, inbox_prefix=permissions.inbox_prefix(user))
    if settings.nats_tls_ca is not None:
        opts["tls"] = tls_context(settings.nats_tls_ca)
        if settings.nats_tls_hostname:
            opts["tls_hostname"] = settings.nats_tls_hostname
    return opts


async def connect(settings: RuntimeSettings, name: str, user: str = "") -> Client:
    nc = Client()

    async def on_disconnect() -> None:
        if nc.is_closed or nc.is_draining:
            return  # our own shutdown, not an outage
        log.warning("nats disconnected; reconnecting", extra={"nats_url": settings.nats_url})

    async def on_reconnect() -> None:
        log.info("nats reconnected", extra={"nats_url": settings.nats_url})

    async def on_error(err: Exception) -> None:
        # Permission violations arrive here: the server refused a publish or subscribe of this user.
        log.warning("nats error: %s", err)

    async def on_closed() -> None:
        log.info("nats connection closed")

    await nc.connect(
        servers=[s.strip() for s in settings.nats_url.split(",")],
        name=name,
        connect_timeout=settings.nats_connect_timeout_s,
        max_reconnect_attempts=settings.nats_max_reconnect_attempts,
        reconnect_time_wait=settings.nats_reconnect_wait_s,
        allow_reconnect=True,
        disconnected_cb=on_disconnect,
        reconnected_cb=on_reconnect,
        error_cb=on_error,
        closed_cb=on_closed,
        **nats_options(settings, user or name),
    )
    return nc
