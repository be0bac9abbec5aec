"""`conclave up`: the whole stack on one machine, each service its own process."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

from services import registry
from services.bus.address import DEFAULT_NATS_PORT, DEFAULT_NATS_URL
from services.runtime.settings import RuntimeSettings
from services.security.local import LocalSecurity
from services.stack.declare import declare_bus
from services.stack.natsd import NatsServer, nats_answers
from services.stack.supervisor import ProcessSpec, Supervisor, service_argv

log = logging.getLogger(__name__)


@dataclass
class StackOptions:
    state_dir: Path = Path(".state")
    nats_url: str = DEFAULT_NATS_URL
    services: list[str] = field(default_factory=lambda: list(registry.SERVICES))
    # Extra processes the stack runs beside the services (e.g. the CPU model pod).
    extra: list[ProcessSpec] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    # Settings for one service only, e.g. {"inference": {"CONCLAVE_PODS": "http://127.0.0.1:8081"}}.
    service_env: dict[str, dict[str, str]] = field(default_factory=dict)
    # TLS and per-role NATS users (docs/security.md); material in <state_dir>/security, made on first run.
    security: bool = True


class Stack:
    """Starts NATS (unless one is reachable at `nats_url`) and every service; stops them in reverse.

    The nats-server it started is supervised like the services: if it dies, it is started again on the
    same port and the same JetStream store (so nothing stored is lost), with backoff, and logged.
    """

    def __init__(self, opts: StackOptions) -> None:
        self.opts = opts
        self.nats: NatsServer | None = None
        self.supervisor = Supervisor(opts.state_dir / "logs")
        self.nats_url = opts.nats_url
        self.nats_restarts = 0
        self._stopping = asyncio.Event()
        self._nats_watch: asyncio.Task[None] | None = None

    async def start(self) -> None:
        state = self.opts.state_dir
        state.mkdir(parents=True, exist_ok=True)
        sec = LocalSecurity.ensure(state / "security") if self.opts.security else None
        if nats_answers(self.opts.nats_url):
            log.info("using the NATS server already at %s", self.opts.nats_url)
        else:
            host_port = self.opts.nats_url.split("://", 1)[-1]
            host, _, port = host_port.partition(":")
            self.nats = NatsServer(
                store_dir=state / "jetstream", host=host or "127.0.0.1", port=int(port or DEFAULT_NATS_PORT),
                log_file=state / "logs" / "nats-server.log", security=sec,
            )
            (state / "logs").mkdir(parents=True, exist_ok=True)
            # Started from the main thread: the server is tied to it (PDEATHSIG), not to a pool thread.
            self.nats.start()
            log.info("started nats-server at %s (data in %s)", self.nats.url, state / "jetstream")
            self.nats_url = self.nats.url
            self._nats_watch = asyncio.create_task(self._keep_nats(self.nats), name="supervise-nats-server")
        env = {"CONCLAVE_NATS_URL": self.nats_url, **(sec.nats_env() if sec else {}), **self.opts.env}
        if sec is not None:
            # Streams, consumers and buckets are created by the admin user: services may only check them.
            await declare_bus(RuntimeSettings(nats_url=self.nats_url, nats_credentials_dir=sec.nats_dir,
                                              nats_tls_ca=sec.ca_file))
        for spec in self.opts.extra:
            spec.env = {**env, **spec.env}
            self.supervisor.add(spec)
        for name in self.opts.services:
            entry = registry.get(name)
            for i in range(entry.replicas):
                suffix = f"-{i}" if entry.replicas > 1 else ""
                own = sec.service_env(name) if sec else {}
                self.supervisor.add(ProcessSpec(name=f"{name}{suffix}", argv=service_argv(name),
                                                env={**env, **own, **self.opts.service_env.get(name, {})}))

    async def _keep_nats(self, server: NatsServer, poll_s: float = 0.5, max_backoff_s: float = 30.0) -> None:
        backoff = 0.5
        up_since = time.monotonic()
        while not self._stopping.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), poll_s)
            if self._stopping.is_set() or server.proc is None or server.proc.poll() is None:
                continue
            if time.monotonic() - up_since > 60:
                backoff = 0.5  # it ran a good while: a new fault, not a crash loop
            self.nats_restarts += 1
            log.warning("nats-server exited with %s; restarting it on %s with the same store (%s) in %.1fs",
                        server.proc.returncode, server.url, server.store_dir, backoff)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), backoff)
            if self._stopping.is_set():
                return
            try:
                # On the loop's (main) thread: the server is tied to the thread that starts it.
                server.start()
                log.info("nats-server restarted at %s (restart %d)", server.url, self.nats_restarts)
                up_since = time.monotonic()
            except (RuntimeError, TimeoutError, OSError) as exc:
                log.error("nats-server did not restart: %s (log: %s)", exc, server.log_file)
            backoff = min(backoff * 2, max_backoff_s)

    async def stop(self) -> None:
        self._stopping.set()
        if self._nats_watch is not None:
            await asyncio.gather(self._nats_watch, return_exceptions=True)
        await self.supervisor.stop()
        if self.nats is not None:
            await asyncio.to_thread(self.nats.stop)


async def run_until_signal(stack: Stack, main: Callable[[Stack], Awaitable[None]] | None = None) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    await stack.start()
    try:
        if main is None:
            await stop.wait()
        else:
            job = asyncio.create_task(main(stack))
            waiter = asyncio.create_task(stop.wait())
            await asyncio.wait({job, waiter}, return_when=asyncio.FIRST_COMPLETED)
            waiter.cancel()
            if job.done():
                job.result()
            else:
                job.cancel()
                await asyncio.gather(job, return_exceptions=True)
    finally:
        log.info("stopping the stack")
        await stack.stop()
    return 0
