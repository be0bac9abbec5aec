"""CONCLAVE_GATEWAY_WORKERS: several gateway processes on one gRPC port (services/inference/workers.py).

The service as a process (real NATS, the scripted model over real gRPC): worker 0 starts the others on its port,
calls from separate connections are served, a worker that dies is started again, and SIGTERM to worker 0
drains every worker and ends them all.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest

from conclave.v1 import inference_pb2_grpc
from services.inference.app import InferenceApp
from services.inference.backends.scripted import ScriptedBackend
from services.inference.settings import InferenceSettings
from services.inference.workers import WORKER_INDEX_ENV, worker_env
from services.stack.natsd import free_port
from tests.conftest import eventually, fast_env
from tests.inference_helpers.gateway import chat

REPO = Path(__file__).resolve().parents[1]


def children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(x) for x in text.split()]


def worker_index_of(pid: int) -> str:
    """The worker index in a process's environment ("" before its exec, or once it is gone)."""
    try:
        env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return ""
    return next((e.split(b"=", 1)[1].decode() for e in env if e.startswith(WORKER_INDEX_ENV.encode() + b"=")), "")


def gone(pid: int) -> bool:
    """Exited: no such process, or a zombie nobody reaped yet (an orphan's new parent may never reap it)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def indexes(pid: int) -> list[str]:
    return sorted(worker_index_of(p) for p in children(pid))


async def until(predicate: Callable[[], bool], timeout: float) -> None:
    async def check() -> bool:
        return predicate()

    await eventually(check, timeout=timeout)


async def one_call(port: int, text: str) -> str:
    # A channel of its own: a new connection, which the kernel may hand to either worker.
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = inference_pb2_grpc.InferenceStub(channel)
        out = []
        async for resp in stub.Generate(chat(text, 16), timeout=30):
            out.append(resp.text)
            if resp.HasField("usage"):
                assert resp.usage.completion_tokens > 0
        return "".join(out)


@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="reads worker processes from /proc (Linux)")
async def test_workers_share_the_port_restart_and_drain(bus, nats_server, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    port = free_port()
    env = {**os.environ, **fast_env(nats_server.env()), "CONCLAVE_BACKEND": "scripted", "CONCLAVE_GRPC_PORT": str(port),
           "CONCLAVE_GATEWAY_WORKERS": "3", "CONCLAVE_DRAIN_GRACE_S": "2", "CONCLAVE_LOG_LEVEL": "INFO",
           "PYTHONPATH": f"{REPO}{os.pathsep}{REPO / 'proto'}"}
    env.pop(WORKER_INDEX_ENV, None)
    log = open(tmp_path / "gateway.log", "wb")  # noqa: SIM115 - the child writes it
    proc = subprocess.Popen(  # noqa: ASYNC220 - started once; the test waits on it in a thread
        [sys.executable, "-m", "services.inference.service"], cwd=REPO, env=env, stdout=log,
        stderr=subprocess.STDOUT)
    try:
        await until(lambda: indexes(proc.pid) == ["1", "2"], timeout=60)
        workers = children(proc.pid)

        async def serving() -> bool:
            try:
                await one_call(port, "hello")
                return True
            except grpc.aio.AioRpcError:
                return False

        await eventually(serving, timeout=60)
        # Every worker is a whole gateway: many separate connections are all served.
        texts = await asyncio.gather(*(one_call(port, f"question {i}") for i in range(12)))
        assert all(texts)

        # A worker that dies is started again, under the same index.
        os.kill(workers[0], signal.SIGKILL)
        await until(lambda: workers[0] not in children(proc.pid) and indexes(proc.pid) == ["1", "2"], timeout=30)

        # SIGTERM to worker 0 (what Kubernetes sends) drains them all; everything exits cleanly.
        alive = children(proc.pid)
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(proc.wait, 60) == 0
        for pid in alive:
            assert gone(pid)
        text = (tmp_path / "gateway.log").read_text()
        assert "gateway workers started" in text
        assert "gateway worker exited; restarting it" in text
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        log.close()


@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="reads worker processes from /proc (Linux)")
async def test_workers_die_with_a_killed_worker_0(bus, nats_server, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """SIGKILL gives worker 0 no drain: its workers must not outlive it holding the port."""
    env = {**os.environ, **fast_env(nats_server.env()), "CONCLAVE_BACKEND": "scripted", "CONCLAVE_GRPC_PORT": "0",
           "CONCLAVE_GATEWAY_WORKERS": "2", "CONCLAVE_DRAIN_GRACE_S": "1", "PYTHONPATH": f"{REPO}{os.pathsep}{REPO / 'proto'}"}
    env.pop(WORKER_INDEX_ENV, None)
    proc = subprocess.Popen(  # noqa: ASYNC220 - started once; the test waits on it in a thread
        [sys.executable, "-m", "services.inference.service"], cwd=REPO, env=env, stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL)
    try:
        # Killed as soon as the worker is forked: whether or not its tie to worker 0 (prctl) took yet, it ends.
        await until(lambda: len(children(proc.pid)) == 1, timeout=60)
        (worker,) = children(proc.pid)
        proc.kill()
        await asyncio.to_thread(proc.wait, 30)
        await until(lambda: gone(worker), timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


async def test_a_lone_gateway_does_not_share_its_port() -> None:
    """Without workers the port stays exclusive: a second gateway on it fails to start instead of silently
    taking half the connections. With workers > 1, two gateways bind it together."""
    shared = InferenceSettings(grpc_port=0, backend="scripted", gateway_workers=2)
    first = InferenceApp(shared, backend=ScriptedBackend([]))
    await first.start()
    try:
        second = InferenceApp(shared.model_copy(update={"grpc_port": first.port}), backend=ScriptedBackend([]))
        await second.start()
        await second.close()
        lone = InferenceApp(shared.model_copy(update={"grpc_port": first.port, "gateway_workers": 1}),
                            backend=ScriptedBackend([]))
        with pytest.raises(RuntimeError, match="(?i)bind"):
            await lone.start()
        await lone.backend.close()
    finally:
        await first.close()


def test_worker_env_keeps_ports_and_names_apart() -> None:
    assert worker_env(2, 50051, 9100, "") == {WORKER_INDEX_ENV: "2", "CONCLAVE_GRPC_PORT": "50051",
                                              "CONCLAVE_METRICS_PORT": "9102"}
    env = worker_env(1, 50051, 0, "gw-a")
    assert env["CONCLAVE_METRICS_PORT"] == "0" and env["CONCLAVE_INSTANCE"] == "gw-a-w1"
