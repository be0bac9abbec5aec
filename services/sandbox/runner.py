"""Run untrusted Python in a separate, isolated, resource-limited process (see README.md)."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import functools
import glob
import json
import logging
import os
import secrets
import shutil
import signal
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path

from services.sandbox.limits import SandboxLimits, SandboxResult
from services.sandbox.settings import SandboxSettings

log = logging.getLogger(__name__)

BOOTSTRAP = Path(__file__).with_name("_bootstrap.py")
REPO_ROOT = Path(__file__).resolve().parents[2]
# After the process exits, how long its pipes may stay open (only orphans in hooks-only mode can do that).
_PIPE_GRACE_S = 1.0
_STATUS_CAP = 256 * 1024
_NOBODY = 65534


async def run_python(code: str, *, limits: SandboxLimits | None = None, stdin: str = "") -> SandboxResult:
    """Run `code` as __main__ of a fresh isolated interpreter; never raises for anything the code does."""
    limits = limits or SandboxLimits()
    loop = asyncio.get_running_loop()
    started = loop.time()
    libraries = await asyncio.to_thread(_library_files)
    workdir = Path(tempfile.mkdtemp(prefix="conclave-sbx-"))
    run = _Run(limits)
    try:
        return await run.execute(code, stdin, workdir, started, libraries)
    finally:
        await run.kill_everything()
        run.close()
        _remove_tree(workdir)


def run_python_sync(code: str, *, limits: SandboxLimits | None = None, stdin: str = "") -> SandboxResult:
    """Blocking twin of run_python, for code without an event loop."""
    return asyncio.run(run_python(code, limits=limits, stdin=stdin))


class _Run:
    """State of one run, so that cleanup can find whatever was started however far we got."""

    def __init__(self, limits: SandboxLimits) -> None:
        self.limits = limits
        self.proc: asyncio.subprocess.Process | None = None
        self.init_pidfd: int | None = None
        self.uid = _pick_uid() if os.geteuid() == 0 else os.geteuid()
        self.events: list[dict] = []

    async def execute(self, code: str, stdin: str, workdir: Path, started: float,
                      libraries: list[str]) -> SandboxResult:
        limits = self.limits
        allow_weak = limits.allow_weak if limits.allow_weak is not None else SandboxSettings().allow_weak
        loop = asyncio.get_running_loop()
        main_py = workdir / "main.py"
        main_py.write_text(code, encoding="utf-8")
        if os.geteuid() == 0:
            # user-ns and hooks-only modes run as this uid on the host dir itself.
            os.chown(workdir, self.uid, self.uid)
            os.chown(main_py, self.uid, self.uid)
        if allow_weak and os.geteuid() != 0:
            _protect_service()
        status_r, status_w = os.pipe()
        cfg = {
            "workdir": str(workdir), "status_fd": status_w, "uid": self.uid, "gid": self.uid,
            "isolation": limits.isolation, "audit_hooks": limits.audit_hooks,
            "cpu_s": limits.cpu_s, "memory_mb": limits.memory_mb, "file_mb": limits.file_mb,
            "disk_mb": limits.disk_mb, "max_procs": limits.max_procs, "open_files": limits.open_files,
            "hide_paths": _hide_paths(limits, workdir), "seccomp": limits.seccomp, "allow_weak": allow_weak,
            "library_files": libraries,
        }
        try:
            self.proc = await asyncio.create_subprocess_exec(
                sys.executable, "-I", "-S", "-B", "-X", "utf8", str(BOOTSTRAP), json.dumps(cfg),
                stdin=asyncio.subprocess.PIPE if stdin else asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
                cwd=workdir, env=_minimal_env(workdir), start_new_session=True, pass_fds=(status_w,),
            )
        except BaseException:
            os.close(status_r)
            raise
        finally:
            os.close(status_w)
        assert self.proc.stdout is not None and self.proc.stderr is not None
        status_reader = asyncio.StreamReader(limit=_STATUS_CAP)
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(status_reader),
                                     os.fdopen(status_r, "rb", buffering=0))
        status_task = asyncio.create_task(self._read_status(status_reader))
        readers = [
            asyncio.create_task(_drain(self.proc.stdout, limits.output_bytes)),
            asyncio.create_task(_drain(self.proc.stderr, limits.output_bytes)),
        ]
        feeder = asyncio.create_task(_feed(self.proc, stdin)) if stdin else None
        # The status pipe closes when the supervisor exits, i.e. after init and every leftover of the
        # code are gone (the code itself never holds it). Process.wait() would also wait for stdout.
        done, _ = await asyncio.wait([status_task], timeout=limits.wall_s)
        timed_out = not done
        if timed_out:
            await self.kill_everything()
        _, pending = await asyncio.wait(readers, timeout=_PIPE_GRACE_S)
        if pending:  # something the code left behind still holds a pipe
            await self.kill_everything(force=True)
            _, pending = await asyncio.wait(pending, timeout=_PIPE_GRACE_S)
        for task in [*pending, status_task, *([feeder] if feeder else [])]:
            task.cancel()
        wall = loop.time() - started
        (out, out_cut) = readers[0].result() if readers[0].done() and not readers[0].cancelled() else (b"", True)
        (err, err_cut) = readers[1].result() if readers[1].done() and not readers[1].cancelled() else (b"", True)
        result = SandboxResult(
            status="error", exit_code=None, wall_s=round(wall, 3), truncated=out_cut or err_cut,
            stdout=out.decode("utf-8", errors="replace"), stderr=err.decode("utf-8", errors="replace"),
        )
        self._classify(result, timed_out)
        if result.status == "refused":
            log.error("sandbox refused to run code: %s", result.detail)
        elif result.isolation == "hooks-only":
            log.warning("SANDBOX IS WEAK: code ran without namespaces (seccomp, Landlock where present, audit hooks; "
                        "CONCLAVE_SANDBOX_ALLOW_WEAK is on): %s", "; ".join(result.warnings))
        return result

    def close(self) -> None:
        if self.init_pidfd is not None:
            os.close(self.init_pidfd)
            self.init_pidfd = None
        transport = getattr(self.proc, "_transport", None)  # no public way to drop the pipes early
        if transport is not None:
            transport.close()

    async def _read_status(self, reader: asyncio.StreamReader) -> None:
        while line := await reader.readline():
            try:
                event = json.loads(line)
            except ValueError:
                continue
            self.events.append(event)
            if event.get("event") == "started" and self.init_pidfd is None:
                with contextlib.suppress(OSError):  # already gone: nothing left to kill
                    self.init_pidfd = os.pidfd_open(int(event["pid"]))

    def _classify(self, result: SandboxResult, timed_out: bool) -> None:
        by_kind: dict[str, dict] = {}
        for event in self.events:
            by_kind.setdefault(str(event.get("event")), event)
            result.warnings.extend(event.get("warnings") or [])
        result.isolation = str(by_kind.get("started", {}).get("isolation", ""))
        exit_event = by_kind.get("exit")
        if "refused" in by_kind:
            result.status, result.isolation = "refused", "hooks-only"
            why = "; ".join(result.warnings) or "isolation='hooks-only' was asked for"
            result.detail = (f"no sandbox layer that enforces the limits here ({why}): "
                             "only the weak 'hooks-only' mode works, so the code was not run. Deploy where "
                             "user/mount/pid/net namespaces work (services/sandbox/README.md), or set "
                             "CONCLAVE_SANDBOX_ALLOW_WEAK=1 to accept a mode that is not a security boundary.")
            return
        if exit_event is not None:
            sig, code = exit_event.get("signal"), exit_event.get("code")
            result.exit_code = -int(sig) if sig else int(code)
            result.cpu_s = round(float(exit_event.get("cpu_s", 0.0)), 3)
        if timed_out:
            result.status, result.detail = "timeout", f"wall-clock limit of {self.limits.wall_s}s exceeded"
        elif "disk" in by_kind:
            result.status, result.detail = "failed", f"disk limit of {self.limits.disk_mb} MiB exceeded"
        elif "error" in by_kind:
            result.status, result.detail = "error", str(by_kind["error"].get("message", "sandbox error"))
        elif exit_event is None:
            init = by_kind.get("init-exit", {})
            result.status = "error"
            result.detail = f"sandbox ended without a report (init: {init or 'no status'})"
        elif exit_event.get("memory"):
            result.status, result.detail = "memory", f"memory limit of {self.limits.memory_mb} MiB exceeded"
        elif exit_event.get("signal") in (signal.SIGXCPU, signal.SIGKILL) and (result.cpu_s or 0) >= int(
            self.limits.cpu_s
        ) - 0.1:
            result.status, result.detail = "timeout", f"CPU limit of {self.limits.cpu_s}s exceeded"
        elif result.exit_code == 0:
            result.status = "ok"
        else:
            result.status = "failed"
            result.detail = (f"killed by signal {-result.exit_code}" if result.exit_code and result.exit_code < 0
                             else f"exit code {result.exit_code}")
        if result.truncated and result.status != "ok":
            result.detail += f"; output over {self.limits.output_bytes} bytes was discarded"

    async def kill_everything(self, force: bool = False) -> None:
        """Kill init: in namespace modes that takes the whole pid namespace down, and the supervisor
        then kills every orphan (it is their subreaper) and exits. With `force`, or if the supervisor
        does not exit promptly, SIGKILL its process group and, as root, every process of the run's uid
        too. Idempotent."""
        proc = self.proc
        if self.init_pidfd is not None:
            with contextlib.suppress(OSError):
                signal.pidfd_send_signal(self.init_pidfd, signal.SIGKILL)
            os.close(self.init_pidfd)
            self.init_pidfd = None
            if not force and proc is not None and await _exited(proc, _PIPE_GRACE_S):
                return
        if proc is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
        if os.geteuid() == 0 and self.uid not in (0, _NOBODY):
            _kill_uid(self.uid)
        if proc is not None and not await _exited(proc, 5.0):
            log.error("sandbox supervisor %s did not exit after SIGKILL", proc.pid)


async def _exited(proc: asyncio.subprocess.Process, timeout: float) -> bool:
    """Whether the process ended within `timeout`; polls returncode because Process.wait() also
    waits for the stdout/stderr pipes, which a leftover may still hold."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while proc.returncode is None:
        if loop.time() > deadline:
            return False
        await asyncio.sleep(0.01)
    return True


async def _drain(stream: asyncio.StreamReader, cap: int) -> tuple[bytes, bool]:
    """Keep the first `cap` bytes, read and drop the rest so the writer never blocks."""
    kept = bytearray()
    truncated = False
    while chunk := await stream.read(65536):
        room = cap - len(kept)
        if room > 0:
            kept += chunk[:room]
        if len(chunk) > room:
            truncated = True
    return bytes(kept), truncated


async def _feed(proc: asyncio.subprocess.Process, data: str) -> None:
    assert proc.stdin is not None
    with contextlib.suppress(BrokenPipeError, ConnectionResetError):
        proc.stdin.write(data.encode("utf-8"))
        await proc.stdin.drain()
    with contextlib.suppress(BrokenPipeError, ConnectionResetError):
        proc.stdin.close()


def _minimal_env(workdir: Path) -> dict[str, str]:
    # Nothing inherited: no tokens, proxies or cloud credentials reach the code.
    return {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": str(workdir), "TMPDIR": str(workdir),
            "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8"}


def _hide_paths(limits: SandboxLimits, workdir: Path) -> list[str]:
    paths = [*limits.hide_paths, str(REPO_ROOT)]
    real_wd = os.path.realpath(workdir)
    return [p for p in dict.fromkeys(paths)
            if not (real_wd + "/").startswith(os.path.realpath(p).rstrip("/") + "/")]


@functools.cache
def _library_files() -> list[str]:
    """Shared libraries the interpreter and its stdlib extension modules link, as the dynamic loader finds
    them: the namespace modes expose exactly these (one read-only bind each) in the code's root.
    Computed once per process with ldd; without ldd, the usual library dirs are exposed whole."""
    dynload = sysconfig.get_path("platstdlib", vars={"platbase": sys.base_prefix, "base": sys.base_prefix})
    objects = [os.path.realpath(sys.executable), *sorted(glob.glob(os.path.join(dynload, "lib-dynload", "*.so")))]
    ldd = shutil.which("ldd")
    if ldd is not None:
        proc = subprocess.run([ldd, *objects], capture_output=True, text=True, timeout=60, check=False)
        found = set()
        for line in proc.stdout.splitlines():
            parts = line.split()
            if "=>" in parts and len(parts) > parts.index("=>") + 1 and parts[parts.index("=>") + 1].startswith("/"):
                found.add(parts[parts.index("=>") + 1])
            elif parts and parts[0].startswith("/") and "(0x" in line:
                found.add(parts[0])  # the dynamic loader itself
        if found:
            return sorted(p for p in found if os.path.exists(p))
    log.warning("ldd unavailable: the sandbox root exposes the system library dirs whole")
    return [d for d in ("/lib", "/lib64", "/usr/lib", "/usr/lib64") if os.path.isdir(d)]


@functools.cache
def _protect_service() -> None:
    """Weak mode runs the code under this service's own uid: make this process non-dumpable, so its
    /proc/<pid>/environ, mem and fds belong to root and it cannot be ptraced by that code."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(4, 0, 0, 0, 0) != 0:  # PR_SET_DUMPABLE
        log.error("could not make the service non-dumpable: errno %d", ctypes.get_errno())


def _pick_uid() -> int:
    """A random uid no account uses, so RLIMIT_NPROC counts only this run and runs cannot signal
    each other. Falls back to nobody where the uid map is too small to pick from."""
    try:
        with open("/proc/self/uid_map") as f:
            ranges = [tuple(int(x) for x in line.split()) for line in f if line.strip()]
    except OSError:
        return _NOBODY
    for inside, _outside, count in ranges:
        lo, hi = max(inside, 1_000_000), min(inside + count - 1, 2**31 - 2)
        if hi - lo > 1_000_000:
            return lo + secrets.randbelow(hi - lo)
    return _NOBODY


def _kill_uid(uid: int) -> None:
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            # status, not stat(): a non-dumpable process's /proc dir is owned by root.
            with open(f"/proc/{entry}/status") as f:
                real_uid = next((int(line.split()[1]) for line in f if line.startswith("Uid:")), -1)
            if real_uid == uid:
                os.kill(int(entry), signal.SIGKILL)
        except (OSError, ValueError):
            continue


def _remove_tree(path: Path) -> None:
    def make_writable_and_retry(func, failed_path, _exc_info):  # type: ignore[no-untyped-def]
        with contextlib.suppress(OSError):
            os.chmod(os.path.dirname(failed_path), 0o700)
            os.chmod(failed_path, 0o700)
        func(failed_path)

    try:
        shutil.rmtree(path, onerror=make_writable_and_retry)
    except OSError as e:
        log.error("could not remove sandbox dir %s: %s", path, e)
