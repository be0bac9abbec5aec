"""Several gateway processes on one gRPC port (CONCLAVE_GATEWAY_WORKERS), so that one gateway uses several cores.

Why: one gateway process spends its core on framing (the pod's SSE in, one gRPC message out per chunk); on the
H100 it saturated one core at 12-15 k streamed tokens/s while vLLM produced more (docs/gpu.md). Like uvicorn's
or gunicorn's workers: every worker binds the same port with SO_REUSEPORT and the kernel spreads the incoming
connections over them. A gRPC channel is one connection, so all calls of one client process go to one worker;
the load spreads over clients, not over the calls of one client.

Worker 0 is the process that was started (the service, or benchmarks/gpu_gateway.py's child). It binds first
(port 0: a free one) and starts workers 1..N-1 as copies of itself (same argv, same environment, plus
CONCLAVE_GATEWAY_WORKER_INDEX and the bound port), restarts one that dies (after a pause), and on its own
drain sends them SIGTERM and waits, so the pod's SIGTERM drains them all. Each worker is a whole gateway: its
own pod limits (pod_max_inflight is per worker: a pod may see N times it), its own ledger client (pending
commits over-count for at most the linger, as between replicas), its own /metrics (metrics_port + index when
metrics_port is fixed, a free one otherwise; each registers itself in NATS like a replica, so Prometheus
scrapes every worker and sums them like replicas).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
from collections.abc import Callable, Mapping

from services.stack.natsd import die_with_parent

log = logging.getLogger(__name__)

WORKER_INDEX_ENV = "CONCLAVE_GATEWAY_WORKER_INDEX"


def worker_index() -> int:
    """0 for the process that was started (and a gateway without workers); i for the worker it started i-th."""
    return int(os.environ.get(WORKER_INDEX_ENV, "0") or 0)


def worker_env(index: int, grpc_port: int, metrics_port: int, instance: str) -> dict[str, str]:
    """The environment a worker gets on top of worker 0's."""
    env = {WORKER_INDEX_ENV: str(index), "CONCLAVE_GRPC_PORT": str(grpc_port),
           "CONCLAVE_METRICS_PORT": str(metrics_port + index if metrics_port else 0)}
    if instance:  # an explicit instance name stays unique per worker
        env["CONCLAVE_INSTANCE"] = f"{instance}-w{index}"
    return env


class WorkerSet:
    """Workers 1..n-1 of a gateway, as child processes running `argv` (worker 0 is the caller)."""

    def __init__(self, n: int, argv: list[str], env_of: Callable[[int], Mapping[str, str]], *,
                 restart_delay_s: float = 1.0) -> None:
        self.n = n
        self.argv = argv
        self.env_of = env_of
        self.restart_delay_s = restart_delay_s
        self.procs: dict[int, asyncio.subprocess.Process] = {}
        self.restarts = 0
        self._stopping = False
        self._watch: asyncio.Task[None] | None = None

    @classmethod
    def of_this_process(cls, n: int, grpc_port: int, metrics_port: int, instance: str) -> WorkerSet:
        """Copies of the running process (`python -m module ...` or `python script ...`), told which worker
        they are and which port to share."""
        module = _main_module()
        argv = [sys.executable, *(["-m", module] if module else sys.argv[:1]), *sys.argv[1:]]
        return cls(n, argv, lambda i: {**os.environ, **worker_env(i, grpc_port, metrics_port, instance)})

    async def _spawn(self, index: int) -> None:
        # A worker 0 killed outright (SIGKILL) takes its workers with it: none is left holding the port.
        self.procs[index] = await asyncio.create_subprocess_exec(*self.argv, env=dict(self.env_of(index)),
                                                                 preexec_fn=_tied_to(os.getpid()))

    async def start(self) -> None:
        for i in range(1, self.n):
            await self._spawn(i)
        log.info("gateway workers started", extra={"workers": self.n, "pids": [p.pid for p in self.procs.values()]})
        self._watch = asyncio.create_task(self._keep(), name="gateway-workers")

    async def _keep(self) -> None:
        """Restarts a worker that died: its calls failed, the others' are untouched."""
        while not self._stopping:
            waits = {asyncio.ensure_future(p.wait()): i for i, p in self.procs.items()}
            done, pending = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
            for fut in pending:
                fut.cancel()
            if self._stopping:
                return
            for fut in done:
                i = waits[fut]
                log.error("gateway worker exited; restarting it", extra={
                    "worker": i, "returncode": fut.result(), "delay_s": self.restart_delay_s})
                await asyncio.sleep(self.restart_delay_s)
                if self._stopping:
                    return
                self.restarts += 1
                await self._spawn(i)

    async def stop(self, grace_s: float) -> list[int | None]:
        """SIGTERM to every worker (each drains its calls within `grace_s`), then SIGKILL what is left."""
        self._stopping = True
        if self._watch is not None:
            self._watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watch
        for p in self.procs.values():
            if p.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    p.send_signal(signal.SIGTERM)
        for p in self.procs.values():
            try:
                await asyncio.wait_for(p.wait(), grace_s + 10)
            except TimeoutError:
                log.warning("gateway worker did not stop in time; killing it", extra={"pid": p.pid})
                with contextlib.suppress(ProcessLookupError):
                    p.kill()
                await p.wait()
        return [p.returncode for p in self.procs.values()]


def _tied_to(parent: int) -> Callable[[], None]:
    def preexec() -> None:
        die_with_parent()
        if os.getppid() != parent:  # worker 0 died before the tie took: nobody would ever stop this one
            os._exit(1)

    return preexec


def _main_module() -> str:
    """`services.inference.service` when this process runs as `python -m services.inference.service`."""
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    return spec.name if spec is not None and spec.name != "__main__" else ""
