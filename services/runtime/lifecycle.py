"""The lifecycle every Conclave service shares: connect → declare → register → serve → drain.

A service is a class with a name and an async `setup(rt)` that adds workers, subscriptions and
background tasks to the `Runtime`. `serve(service, settings)` does the rest: logs, the probe endpoint,
the NATS connection, the bus declaration, micro-service registration (PING/INFO/STATS discovery), the
ready flag, and on SIGTERM/SIGINT a drain bounded by `drain_grace_s`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import signal
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, ClassVar, Generic, TypeVar

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.micro import add_service
from nats.micro.service import Service as MicroService
from prometheus_client import CollectorRegistry, Gauge, Info

from services.bus import subjects, topology
from services.bus.deadletter import DeadLetters, MaxDeliveriesWatcher
from services.bus.topology import ConsumerSpec
from services.runtime import event_loop, logs, tracing
from services.runtime.connection import connect
from services.runtime.http import ProbeServer
from services.runtime.settings import RuntimeSettings
from services.runtime.worker import JetStreamWorker, M, TypedHandler, WorkerMetrics, decoding

log = logging.getLogger(__name__)

VERSION = "0.1.0"
S = TypeVar("S", bound=RuntimeSettings)


class Runtime(Generic[S]):
    """Everything a running service holds; created by `serve`, passed to `setup`."""

    def __init__(self, name: str, settings: S, nc: Client, registry: CollectorRegistry) -> None:
        self.name = name
        self.settings = settings
        self.nc = nc
        self.js: JetStreamContext = nc.jetstream()
        self.registry = registry
        self.instance = settings.instance_name(name)
        self.letters = DeadLetters(self.js, registry)
        self.worker_metrics = WorkerMetrics(registry)
        self.workers: list[JetStreamWorker] = []
        self.micro: MicroService | None = None
        self.ready = False
        self.draining = asyncio.Event()
        self._subs: list[Any] = []
        self._tasks: list[asyncio.Task[Any]] = []
        self._closers: list[Callable[[], Awaitable[None]]] = []
        self._endpoints: list[tuple[str, str, Callable[[Any], Awaitable[None]]]] = []

    def add_worker(self, spec: ConsumerSpec, message_type: type[M], handler: TypedHandler[M], *,
                   concurrency: int | None = None) -> JetStreamWorker:
        """Consumes `spec`; `handler` gets each message decoded as `message_type` (worker.decoding)."""
        worker = JetStreamWorker(
            self.js,
            spec,
            decoding(message_type, handler),
            timing=self.settings.bus_timing(),
            concurrency=concurrency or self.settings.concurrency,
            letters=self.letters,
            metrics=self.worker_metrics,
            pull_requests=self.settings.pull_requests,
        )
        self.workers.append(worker)
        return worker

    async def subscribe(self, subject: str, cb: Callable[[Msg], Awaitable[None]], queue: str = "") -> None:
        self._subs.append(await self.nc.subscribe(subject, queue=queue, cb=cb))

    def add_endpoint(self, name: str, subject: str, handler: Callable[[Any], Awaitable[None]]) -> None:
        """A request/reply endpoint on the micro service (shows up in INFO and STATS)."""
        self._endpoints.append((name, subject, handler))

    def spawn(self, coro: Awaitable[Any], name: str) -> None:
        self._tasks.append(asyncio.create_task(coro, name=name))  # type: ignore[arg-type]

    def on_close(self, closer: Callable[[], Awaitable[None]]) -> None:
        self._closers.append(closer)

    def work(self) -> list[dict[str, object]]:
        """What this replica's workers did since it started (`conclave status`)."""
        return [w.snapshot() for w in self.workers]

    async def answer_work(self, request: Any) -> None:
        await request.respond(json.dumps(self.work()).encode())


class Service(Generic[S]):
    """Base for every service. Subclasses set `name`, `description` and implement `setup`."""

    name: ClassVar[str] = "service"
    description: ClassVar[str] = ""

    def __init__(self, settings: S) -> None:
        self.settings = settings

    async def setup(self, rt: Runtime[S]) -> None:
        raise NotImplementedError

    async def on_drain(self, rt: Runtime[S]) -> None:
        """Called after workers stopped fetching and finished; before the connection closes."""


async def run(service: Service[S], stop: asyncio.Event | None = None, started: asyncio.Event | None = None) -> int:
    """Runs one service until `stop` is set (in-process use) or, without `stop`, SIGTERM/SIGINT arrives."""
    settings = service.settings
    if stop is None:
        # Run as a process: SIGTERM (Kubernetes) and SIGINT (Ctrl-C) start the drain.
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, stop.set)

    registry = CollectorRegistry()
    Info("conclave_build", "Conclave build information.", registry=registry).info(
        {"version": VERSION, "service": service.name, "event_loop": event_loop.running()}
    )
    up = Gauge("conclave_service_ready", "1 when the service is serving.", registry=registry)

    nc = await connect(settings, settings.instance_name(service.name), user=service.name)
    rt: Runtime[S] = Runtime(service.name, settings, nc, registry)
    probe = ProbeServer(registry, lambda: rt.ready and nc.is_connected, settings.metrics_host, settings.metrics_port)
    await probe.start()
    rt.metrics_port = probe.port  # type: ignore[attr-defined]
    watcher: MaxDeliveriesWatcher | None = None
    try:
        if settings.declare_bus:
            try:
                declared = await _unless_stopped(
                    topology.declare(rt.js, settings.bus_timing(), wait_s=settings.bus_give_up_s), stop)
                if not declared:
                    log.info("%s stopping before it served: asked to while it waited for JetStream", service.name)
                    return 0
            except Exception as exc:
                # With security on, a service may only check the topology; a missing or different stream,
                # consumer or bucket needs the admin user (the server refused, so the request timed out).
                # The checks themselves waited bus_give_up_s for a JetStream that did not answer.
                raise RuntimeError(
                    f"the bus is not declared as this service expects, or JetStream did not answer within "
                    f"{settings.bus_give_up_s:.0f}s ({exc!r}); only the NATS admin may create or change streams: "
                    "run `conclave up`, the Kubernetes Job bus-setup, or `python -m services.stack.declare` as "
                    "admin with the same timing settings") from exc
        await service.setup(rt)
        if rt.workers:
            watcher = MaxDeliveriesWatcher(nc, rt.js, rt.letters, sorted({w._spec.stream for w in rt.workers}))
            await watcher.start()
        rt.micro = await add_service(
            nc,
            name=f"conclave-{service.name}",
            version=VERSION,
            description=service.description or service.name,
            metadata={"instance": rt.instance, "metrics_port": str(probe.port)},
            # The work this replica did, in the STATS reply of its "work" endpoint: `conclave status` reads it.
            stats_handler=lambda _endpoint: rt.work(),
        )
        await rt.micro.add_endpoint(name="work", subject=subjects.work(service.name), handler=rt.answer_work)
        for ep_name, subject, handler in rt._endpoints:
            await rt.micro.add_endpoint(name=ep_name, subject=subject, handler=handler)
        for worker in rt.workers:
            await worker.start()
        # Subscriptions are buffered by the client: flush, so "ready" means the server routes to us.
        await nc.flush()
        rt.ready = True
        up.set(1)
        if started is not None:
            started.set()
        log.info("%s ready", service.name, extra={"instance": rt.instance, "metrics_port": probe.port,
                                                   "event_loop": event_loop.running()})
        await stop.wait()
        log.info("%s draining", service.name)
    finally:
        rt.ready = False
        up.set(0)
        rt.draining.set()
        await asyncio.gather(*(w.drain(settings.drain_grace_s) for w in rt.workers), return_exceptions=True)
        with contextlib.suppress(Exception):
            await service.on_drain(rt)
        for task in rt._tasks:
            task.cancel()
        await asyncio.gather(*rt._tasks, return_exceptions=True)
        if watcher is not None:
            await watcher.stop()
        for closer in reversed(rt._closers):
            with contextlib.suppress(Exception):
                await closer()
        if rt.micro is not None:
            with contextlib.suppress(Exception):
                await rt.micro.stop()
        for sub in rt._subs:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
        with contextlib.suppress(Exception):
            await nc.drain()
        if not nc.is_closed:
            # NATS unreachable: drain refuses while the client reconnects, and its reconnect loop would outlive
            # asyncio.run's cancellation, so the process would never exit. Closing stops it.
            with contextlib.suppress(Exception):
                await asyncio.wait_for(nc.close(), timeout=5)
        await probe.stop()
        log.info("%s stopped", service.name)
    return 0


async def _unless_stopped(work: Coroutine[Any, Any, object], stop: asyncio.Event) -> bool:
    """Runs `work` to its end (True; its error is raised) unless `stop` is set first (False; `work` is
    cancelled): a service asked to stop while it still waits at start-up stops at once."""
    task = asyncio.ensure_future(work)
    stopped = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait((task, stopped), return_when=asyncio.FIRST_COMPLETED)
    except BaseException:
        task.cancel()
        raise
    finally:
        stopped.cancel()
    if task.done():
        task.result()
        return True
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError, Exception):
        await task
    return False


def main(service: Service[S]) -> int:
    """Process entrypoint: JSON logs, then run until SIGTERM/SIGINT."""
    logs.configure(service.name, service.settings.log_level, service.settings.log_json)
    tracing.configure(service.name)
    try:
        return event_loop.runner(event_loop.for_service(service.name, service.settings.event_loop))(run(service))
    finally:
        tracing.shutdown()
