"""Runs Conclave's services for end-to-end tests: in-process (fast) or as real OS processes (to kill)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from dataclasses import dataclass, field
from pathlib import Path

from services import registry
from services.runtime.lifecycle import run
from tests.conftest import REPO, fast_env

AGENT_SERVICES = ("intake", "ceo", "recruiter", "solver", "critic", "executor", "evaluator", "single", "archiver")


@dataclass
class InProcessStack:
    """Every agent service as an asyncio task of the test's own loop, each with its own NATS connection."""

    nats_env: dict[str, str]  # NatsServer.env(): URL, credentials dir, CA
    inference_addr: str
    archive_dir: Path
    env: dict[str, str] = field(default_factory=dict)
    _tasks: list[asyncio.Task] = field(default_factory=list)
    _stops: list[asyncio.Event] = field(default_factory=list)

    async def start(self, names=AGENT_SERVICES) -> None:
        values = {**fast_env(self.nats_env), "CONCLAVE_INFERENCE_ADDR": self.inference_addr,
                  "CONCLAVE_ARCHIVE_DIR": str(self.archive_dir), "CONCLAVE_STEP_TIMEOUT_S": "60", **self.env}
        with _patched_env(values):
            services = [registry.get(n).build()() for n in names]
        for service in services:
            stop, started = asyncio.Event(), asyncio.Event()
            self._stops.append(stop)
            self._tasks.append(asyncio.create_task(run(service, stop=stop, started=started)))
            await asyncio.wait_for(started.wait(), 15)

    async def stop(self) -> None:
        for stop in self._stops:
            stop.set()
        await asyncio.gather(*self._tasks, return_exceptions=True)


@contextlib.contextmanager
def _patched_env(values: dict[str, str]):
    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@dataclass
class ServiceProcess:
    """`conclave serve NAME` as a child process: what Kubernetes runs, and what a test can SIGKILL."""

    name: str
    env: dict[str, str]
    log_path: Path
    proc: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        log = open(self.log_path, "ab")  # noqa: SIM115
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "services.cli.main", "serve", self.name, cwd=REPO,
            env={**os.environ, "PYTHONPATH": str(REPO), **self.env}, stdout=log, stderr=log,
        )
        log.close()

    def kill(self) -> None:
        if self.proc and self.proc.returncode is None:
            self.proc.send_signal(signal.SIGKILL)

    async def stop(self) -> None:
        if self.proc and self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.proc.wait(), 15)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()
