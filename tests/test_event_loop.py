"""Service processes run on uvloop unless told otherwise, say which loop they run on, and fall back to
asyncio's own loop where uvloop is missing. The executor, which starts a sandbox per check beside its busy gRPC
channel, runs on asyncio's own loop by default: uvloop starts children with fork(), which gRPC does not
support (services/runtime/event_loop.py)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from services.runtime import event_loop
from tests.agents.stack import ServiceProcess
from tests.conftest import eventually, fast_env


async def ready_line(nats_server, tmp_path: Path, service: str = "intake", **env: str) -> dict:  # type: ignore[no-untyped-def]
    log = tmp_path / f"{service}-{len(env)}.log"
    proc = ServiceProcess(service, fast_env({**nats_server.env(), **env}), log)
    await proc.start()
    try:
        async def ready() -> dict | None:
            for line in log.read_text().splitlines() if log.exists() else ():
                if line.startswith("{") and json.loads(line).get("msg") == f"{service} ready":
                    return json.loads(line)
            return None

        return await eventually(ready, timeout=60, interval=0.2)
    finally:
        proc.kill()


@pytest.mark.asyncio
async def test_a_service_process_runs_on_uvloop_by_default_and_on_asyncio_when_asked(nats_server, bus, tmp_path) -> None:
    assert (await ready_line(nats_server, tmp_path))["event_loop"] == "uvloop"
    assert (await ready_line(nats_server, tmp_path, CONCLAVE_EVENT_LOOP="asyncio"))["event_loop"] == "asyncio"


def test_without_uvloop_the_process_runs_on_asyncio(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "uvloop", None)  # as on Windows: the import fails
    run = event_loop.runner("uvloop")
    assert run is asyncio.run
    assert run(asyncio.sleep(0, "done")) == "done"


def test_the_uvloop_runner_runs_a_coroutine_on_uvloop() -> None:
    async def which() -> str:
        return event_loop.running()

    assert event_loop.runner("uvloop")(which()) == "uvloop"
    assert event_loop.runner("asyncio")(which()) == "asyncio"


@pytest.mark.asyncio
async def test_the_executor_runs_on_asyncio_by_default_and_on_uvloop_only_when_asked(nats_server, bus, tmp_path) -> None:
    assert (await ready_line(nats_server, tmp_path, "executor"))["event_loop"] == "asyncio"
    assert (await ready_line(nats_server, tmp_path, "executor", CONCLAVE_EVENT_LOOP="uvloop"))["event_loop"] == "uvloop"


def test_auto_is_uvloop_except_where_subprocesses_start() -> None:
    assert event_loop.choose("auto", spawns_processes=False) == "uvloop"
    assert event_loop.choose("auto", spawns_processes=True) == "asyncio"
    assert event_loop.choose("uvloop", spawns_processes=True) == "uvloop"
    assert event_loop.choose("asyncio", spawns_processes=False) == "asyncio"


# A process with a busy gRPC channel starts 5 children; gRPC logs each time its fork handlers run.
_SPAWN_BESIDE_GRPC = """
import asyncio, sys, grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from services.runtime import event_loop

async def main():
    server = grpc.aio.server()
    health_pb2_grpc.add_HealthServicer_to_server(health.aio.HealthServicer(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    stub = health_pb2_grpc.HealthStub(grpc.aio.insecure_channel(f"127.0.0.1:{port}"))
    busy = True
    async def calls():
        while busy:
            await stub.Check(health_pb2.HealthCheckRequest())
    tasks = [asyncio.create_task(calls()) for _ in range(4)]
    for _ in range(5):
        child = await asyncio.create_subprocess_exec(sys.executable, "-c", "pass", start_new_session=True)
        await child.wait()
    busy = False
    await asyncio.gather(*tasks)

event_loop.runner(sys.argv[1])(main())
"""


@pytest.mark.parametrize(("loop", "fork_handlers_run"), [("uvloop", True), ("asyncio", False)])
def test_why_starting_a_child_beside_grpc_on_uvloop_runs_grpcs_fork_handlers(loop: str, fork_handlers_run: bool) -> None:
    out = subprocess.run([sys.executable, "-c", _SPAWN_BESIDE_GRPC, loop], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "GRPC_VERBOSITY": "INFO"}, cwd=Path(__file__).resolve().parents[1], check=True)
    assert ("fork_posix" in out.stderr) is fork_handlers_run, out.stderr[-2000:]
