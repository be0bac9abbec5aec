"""Resource limits and the result record of one sandboxed run."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

# "refused": no sandbox layer that enforces the limits here, and weak mode was not allowed (see README.md).
Status = Literal["ok", "failed", "timeout", "memory", "error", "refused"]
Isolation = Literal["auto", "root-ns", "user-ns", "hooks-only"]


@dataclass(frozen=True)
class SandboxLimits:
    """What one run may use. Sizes in MiB, times in seconds, output per stream in bytes."""

    cpu_s: float = 10.0
    wall_s: float = 15.0
    memory_mb: int = 512  # RLIMIT_AS (address space, not RSS)
    file_mb: int = 16  # RLIMIT_FSIZE: largest single file the code may write
    disk_mb: int = 64  # size of the private tmpfs working dir (namespace modes only)
    max_procs: int = 64  # RLIMIT_NPROC, counts threads too
    open_files: int = 256  # RLIMIT_NOFILE
    output_bytes: int = 64_000  # kept per stream; the rest is read and discarded
    # "auto" takes the strongest mechanism that works here; forcing a weaker one is for tests.
    isolation: Isolation = "auto"
    # Audit hooks are a second layer on top of the kernel; off only to prove the kernel layer alone.
    audit_hooks: bool = True
    # Our own seccomp filter in the code's process (on top of the runtime's); off only for the benchmark.
    seccomp: bool = True
    # Run in "hooks-only" mode (no namespaces: not a security boundary) instead of refusing?
    # None: CONCLAVE_SANDBOX_ALLOW_WEAK (SandboxSettings.allow_weak), off by default.
    allow_weak: bool | None = None
    # hooks-only mode: refused to the code by the audit hooks (the namespace modes show it nothing of the
    # host but the stdlib anyway). The repository root is always added by the runner.
    hide_paths: tuple[str, ...] = ("/root", "/home", "/run/secrets", "/var/run/secrets")

    def __post_init__(self) -> None:
        for name in ("cpu_s", "wall_s", "memory_mb", "file_mb", "disk_mb", "max_procs", "open_files", "output_bytes"):
            if getattr(self, name) <= 0:
                raise ValueError(f"SandboxLimits.{name} must be > 0")
        if self.isolation == "hooks-only" and not self.audit_hooks:
            raise ValueError("isolation='hooks-only' without audit hooks would guard nothing")


@dataclass
class SandboxResult:
    status: Status
    exit_code: int | None  # negative: killed by that signal; None: never started
    stdout: str
    stderr: str
    wall_s: float
    truncated: bool = False  # stdout or stderr went over output_bytes
    isolation: str = ""  # mechanism actually in force: "root-ns", "user-ns" or "hooks-only"
    detail: str = ""  # why, for anything but "ok"
    cpu_s: float | None = None
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.status == "ok"
