"""Real CPU pods (`python -m services.inference.pod_llamacpp --model tiny`) as child processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from services.stack.natsd import die_with_parent, free_port

REPO = Path(__file__).resolve().parents[2]


@dataclass
class PodProcess:
    port: int
    proc: subprocess.Popen[bytes]
    log_path: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def name(self) -> str:
        return f"127.0.0.1:{self.port}"

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()

    def log_tail(self, n: int = 2000) -> str:
        return self.log_path.read_text(errors="replace")[-n:] if self.log_path.exists() else ""


def start_pod(log_dir: Path, *, model: str = "tiny", parallel: int = 4, ctx: int = 8192, threads: int = 1,
              extra_args: tuple[str, ...] = ()) -> PodProcess:
    """One thread per pod: llama.cpp's spinning threads collapse when a small host is oversubscribed
    (two pods, the gateway and pytest on 2 cores)."""
    port = free_port()
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"pod-{port}.log"
    with open(log_path, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "services.inference.pod_llamacpp", "--model", model, "--port", str(port),
             "--parallel", str(parallel), "--ctx", str(ctx), "--threads", str(threads), *extra_args],
            cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, stdout=out, stderr=out,
            preexec_fn=die_with_parent,
        )
    return PodProcess(port, proc, log_path)


def wait_ready(pods: list[PodProcess], timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    pending = list(pods)
    while pending:
        pod = pending[0]
        if pod.proc.poll() is not None:
            raise RuntimeError(f"pod on {pod.port} exited {pod.proc.returncode}: {pod.log_tail()}")
        try:
            if httpx.get(pod.url + "/health", timeout=1.0).status_code == 200:
                pending.pop(0)
                continue
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"pod on {pod.port} not healthy within {timeout_s}s: {pod.log_tail()}")
        time.sleep(0.1)
