"""Runs each service as its own OS process and restarts crashed ones with backoff."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)


@dataclass
class ProcessSpec:
    name: str
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)
    # A process that is meant to finish (a one-shot job) is not restarted when it exits 0.
    restart: bool = True


@dataclass
class Supervised:
    spec: ProcessSpec
    proc: asyncio.subprocess.Process | None = None
    restarts: int = 0
    started_at: float = 0.0


class Supervisor:
    def __init__(self, log_dir: Path, *, max_backoff_s: float = 30.0, stop_grace_s: float = 25.0) -> None:
        self._log_dir = log_dir
        self._max_backoff_s = max_backoff_s
        self._stop_grace_s = stop_grace_s
        self._children: list[Supervised] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = asyncio.Event()

    @property
    def children(self) -> list[Supervised]:
        return self._children

    def add(self, spec: ProcessSpec) -> None:
        child = Supervised(spec)
        self._children.append(child)
        self._tasks.append(asyncio.create_task(self._keep(child), name=f"supervise-{spec.name}"))

    async def _spawn(self, child: Supervised) -> asyncio.subprocess.Process:
        self._log_dir.mkdir(parents=True, exist_ok=True)
        out = open(self._log_dir / f"{child.spec.name}.log", "ab")  # noqa: SIM115
        env = {**os.environ, **child.spec.env}
        proc = await asyncio.create_subprocess_exec(
            *child.spec.argv, stdout=out, stderr=out, env=env, start_new_session=True
        )
        out.close()
        child.proc, child.started_at = proc, time.monotonic()
        log.info("started %s (pid %d)", child.spec.name, proc.pid)
        return proc

    async def _keep(self, child: Supervised) -> None:
        backoff = 0.5
        while not self._stopping.is_set():
            proc = await self._spawn(child)
            code = await proc.wait()
            if self._stopping.is_set():
                return
            if code == 0 and not child.spec.restart:
                log.info("%s finished", child.spec.name)
                return
            # A process that ran a while before dying gets a fresh backoff.
            if time.monotonic() - child.started_at > 60:
                backoff = 0.5
            child.restarts += 1
            log.warning(
                "%s exited with %s; restarting in %.1fs (log: %s)",
                child.spec.name, code, backoff, self._log_dir / f"{child.spec.name}.log",
            )
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), timeout=backoff)
            backoff = min(backoff * 2, self._max_backoff_s)

    async def stop(self) -> None:
        self._stopping.set()
        live = [c.proc for c in self._children if c.proc and c.proc.returncode is None]
        for proc in live:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
        if live:
            _done, pending = await asyncio.wait(
                [asyncio.create_task(p.wait()) for p in live], timeout=self._stop_grace_s
            )
            for proc in live:
                if proc.returncode is None:
                    with contextlib.suppress(ProcessLookupError):
                        proc.kill()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


def service_argv(name: str) -> list[str]:
    """The same entrypoint a Kubernetes Deployment runs: `conclave serve NAME`."""
    return [sys.executable, "-m", "services.cli.main", "serve", name]
