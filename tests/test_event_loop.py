"""Service processes run on uvloop unless told otherwise, say which loop they run on, and fall back to
asyncio's own loop where uvloop is missing."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import pytest

from services.runtime import event_loop
from tests.agents.stack import ServiceProcess
from tests.conftest import eventually, fast_env


async def ready_line(nats_server, tmp_path: Path, **env: str) -> dict:  # type: ignore[no-untyped-def]
    log = tmp_path / f"intake-{len(env)}.log"
    intake = ServiceProcess("intake", fast_env({**nats_server.env(), **env}), log)
    await intake.start()
    try:
        async def ready() -> dict | None:
            for line in log.read_text().splitlines() if log.exists() else ():
                if line.startswith("{") and json.loads(line).get("msg") == "intake ready":
                    return json.loads(line)
            return None

        return await eventually(ready, timeout=60, interval=0.2)
    finally:
        intake.kill()


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
