"""The sandbox: isolation, limits, cleanup. Limits are kept tiny so the hostile cases end fast."""

from __future__ import annotations

import asyncio
import os
import resource
import socket
import tempfile
import time
import uuid
from pathlib import Path

import pytest

from services.sandbox import SandboxLimits, run_python, run_python_sync

REPO = Path(__file__).resolve().parents[1]
FAST = SandboxLimits(cpu_s=2, wall_s=3, max_procs=16)


def _bootstrap_processes() -> list[int]:
    """Processes still running this checkout's bootstrap (anything a run left behind). Matching the full
    path keeps other checkouts' sandboxes on the same machine out of the count."""
    ours = str(REPO / "services" / "sandbox" / "_bootstrap.py").encode()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
        except OSError:
            continue
        if ours in cmdline:
            found.append(int(entry))
    return found


@pytest.fixture(scope="module")
def isolation() -> str:
    """The mechanism this machine gives us; kernel-only assertions need a namespace mode."""
    return run_python_sync("pass").isolation


def _needs_kernel_layer(isolation: str) -> None:
    if isolation not in ("root-ns", "user-ns"):
        pytest.skip(f"no namespaces on this machine (isolation={isolation}); see services/sandbox/README.md")


async def test_normal_code_runs_and_prints(isolation: str) -> None:
    result = await run_python("import sys\nprint('hello', 6 * 7)\nprint('to stderr', file=sys.stderr)")
    assert result.status == "ok", result
    assert result.exit_code == 0
    assert result.stdout == "hello 42\n"
    assert result.stderr == "to stderr\n"
    assert not result.truncated
    assert result.isolation == isolation


async def test_stdin_is_given_and_env_is_minimal() -> None:
    os.environ["CONCLAVE_TEST_SECRET"] = "hunter2"
    try:
        result = await run_python("import os\nprint(input()[::-1])\nprint(sorted(os.environ))", stdin="abc\n")
    finally:
        del os.environ["CONCLAVE_TEST_SECRET"]
    assert result.status == "ok", result
    lines = result.stdout.splitlines()
    assert lines[0] == "cba"
    assert "CONCLAVE_TEST_SECRET" not in lines[1]
    no_stdin = await run_python("input()")
    assert no_stdin.status == "failed" and "EOFError" in no_stdin.stderr


async def test_errors_are_reported_as_failed() -> None:
    result = await run_python("def f():\n    raise ValueError('boom')\nf()")
    assert result.status == "failed" and result.exit_code == 1
    assert "ValueError: boom" in result.stderr and 'File "main.py", line 2' in result.stderr
    exited = await run_python("import sys\nsys.exit(3)")
    assert exited.status == "failed" and exited.exit_code == 3


@pytest.mark.parametrize("audit_hooks", [True, False], ids=["hooks+kernel", "kernel-only"])
async def test_network_is_refused(isolation: str, audit_hooks: bool) -> None:
    if not audit_hooks:
        _needs_kernel_layer(isolation)
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        server.setblocking(False)
        port = server.getsockname()[1]
        code = (
            "import socket\n"
            "s = socket.socket()\n"
            "s.settimeout(2)\n"
            f"s.connect(('127.0.0.1', {port}))\n"
            "print('CONNECTED')\n"
        )
        result = await run_python(code, limits=SandboxLimits(audit_hooks=audit_hooks))
        assert result.status == "failed", result
        assert "CONNECTED" not in result.stdout
        with pytest.raises(BlockingIOError):
            server.accept()  # nothing ever reached the listener


@pytest.mark.parametrize("audit_hooks", [True, False], ids=["hooks+kernel", "kernel-only"])
async def test_writes_outside_the_dir_fail(isolation: str, audit_hooks: bool, tmp_path: Path) -> None:
    if not audit_hooks:
        _needs_kernel_layer(isolation)
    targets = [Path("/tmp") / f"sandbox-escape-{uuid.uuid4().hex}", tmp_path / "escape.txt",
               REPO / f"sandbox-escape-{uuid.uuid4().hex}"]
    try:
        for target in targets:
            code = f"open({str(target)!r}, 'w').write('escaped')\nprint('WROTE')"
            result = await run_python(code, limits=SandboxLimits(audit_hooks=audit_hooks))
            assert result.status == "failed", (target, result)
            assert "WROTE" not in result.stdout
            assert not target.exists(), target
    finally:
        for target in targets:
            target.unlink(missing_ok=True)


async def test_writes_inside_the_dir_work_and_the_dir_is_removed() -> None:
    code = (
        "import os, tempfile, shutil\n"
        "open('a.txt', 'w').write('x' * 1000)\n"
        "os.makedirs('d/e')\n"
        "open('d/e/f', 'w').write('y')\n"
        "shutil.rmtree('d')\n"
        "with tempfile.NamedTemporaryFile() as t:\n"
        "    t.write(b'z')\n"
        "print(os.getcwd())\n"
        "print(sorted(os.listdir('.')))\n"
    )
    result = await run_python(code)
    assert result.status == "ok", result
    cwd, listing = result.stdout.splitlines()
    assert listing == "['a.txt', 'main.py']"
    assert not Path(cwd).exists()


async def test_file_size_limit() -> None:
    result = await run_python("open('big', 'wb').write(b'x' * (3 * 1024 * 1024))", limits=SandboxLimits(file_mb=1))
    assert result.status == "failed", result
    assert "File too large" in result.stderr


async def test_repo_is_hidden(isolation: str) -> None:
    result = await run_python(f"print(open({str(REPO / 'pyproject.toml')!r}).read())")
    assert result.status == "failed", result
    assert "[project]" not in result.stdout


async def test_infinite_loop_times_out_on_wall_clock() -> None:
    started = time.monotonic()
    result = await run_python("while True:\n    pass", limits=SandboxLimits(cpu_s=30, wall_s=1))
    assert result.status == "timeout", result
    assert "wall-clock" in result.detail
    assert time.monotonic() - started < 30  # cut short, not the loop's natural end
    assert not _bootstrap_processes()


async def test_cpu_limit_ends_a_busy_loop() -> None:
    result = await run_python("while True:\n    pass", limits=SandboxLimits(cpu_s=1, wall_s=10))
    assert result.status == "timeout", result
    assert "CPU" in result.detail


async def test_sleeping_code_times_out() -> None:
    result = await run_python("import time\ntime.sleep(60)", limits=SandboxLimits(wall_s=0.5))
    assert result.status == "timeout", result


async def test_memory_limit() -> None:
    result = await run_python("x = bytearray(1024 * 1024 * 1024)\nprint('ALLOCATED')", limits=SandboxLimits(memory_mb=256))
    assert result.status == "memory", result
    assert "ALLOCATED" not in result.stdout


async def test_huge_output_is_truncated_and_memory_stays_bounded() -> None:
    rss_before_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    code = "import sys\nchunk = 'x' * 65536\nfor _ in range(1600):\n    sys.stdout.write(chunk)\nprint('END')"
    result = await run_python(code, limits=SandboxLimits(output_bytes=10_000, wall_s=10, cpu_s=10))  # 100 MiB
    assert result.status == "ok", result
    assert result.truncated
    assert len(result.stdout) == 10_000
    growth_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before_kib) / 1024
    assert growth_mib < 40, f"the runner grew by {growth_mib:.0f} MiB reading 100 MiB of output"


async def test_endless_output_is_bounded_by_time() -> None:
    result = await run_python("while True:\n    print('y' * 1000)", limits=SandboxLimits(output_bytes=5000, wall_s=1.5))
    assert result.status == "timeout", result
    assert result.truncated and len(result.stdout) == 5000


async def test_fork_is_refused_by_the_audit_hooks() -> None:
    result = await run_python("import os\nos.fork()\nprint('FORKED')", limits=FAST)
    assert result.status == "failed", result
    assert "os.fork is not allowed" in result.stderr
    result = await run_python("import subprocess\nsubprocess.run(['true'])", limits=FAST)
    assert result.status == "failed", result


async def test_process_limit_is_enforced_by_the_kernel(isolation: str) -> None:
    """Without the hooks, RLIMIT_NPROC (the run has its own uid, so it counts) stops the forking."""
    _needs_kernel_layer(isolation)
    code = (
        "import os, time\n"
        "n = 0\n"
        "try:\n"
        "    while n < 500:\n"
        "        if os.fork() == 0:\n"
        "            time.sleep(30)\n"
        "            os._exit(0)\n"
        "        n += 1\n"
        "except OSError as e:\n"
        "    print('stopped after', n, 'forks, errno', e.errno)\n"
    )
    limits = SandboxLimits(cpu_s=2, wall_s=5, max_procs=16, audit_hooks=False)
    result = await run_python(code, limits=limits)
    assert result.status == "ok", result
    assert result.stdout.startswith("stopped after"), result.stdout
    assert int(result.stdout.split()[2]) < 16
    assert not _bootstrap_processes()  # the sleeping children died with the run


async def test_fork_bomb_ends_bounded(isolation: str) -> None:
    _needs_kernel_layer(isolation)
    bomb = "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n"
    started = time.monotonic()
    result = await run_python(bomb, limits=SandboxLimits(cpu_s=1, wall_s=1.5, max_procs=16, audit_hooks=False))
    assert result.status == "timeout", result
    assert time.monotonic() - started < 30  # cut short, not endless
    await asyncio.sleep(0.1)
    assert not _bootstrap_processes()


async def test_detached_children_do_not_outlive_the_run(isolation: str) -> None:
    _needs_kernel_layer(isolation)
    code = "import os, time\nif os.fork() == 0:\n    os.setsid()\n    time.sleep(60)\nprint('parent done')"
    result = await run_python(code, limits=SandboxLimits(audit_hooks=False, wall_s=5))
    assert result.status == "ok", result
    assert result.wall_s < 30  # did not wait for the 60 s child
    assert not _bootstrap_processes()


async def test_cancellation_kills_the_run_and_removes_the_dir(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # only this run's dirs are counted
    before = set(tmp_path.glob("conclave-sbx-*"))
    task = asyncio.create_task(run_python("import time\ntime.sleep(60)", limits=SandboxLimits(wall_s=30)))
    await asyncio.sleep(0.5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert set(tmp_path.glob("conclave-sbx-*")) <= before
    assert not _bootstrap_processes()


async def test_hooks_only_mode_still_guards_network_and_files(tmp_path: Path) -> None:
    """The fallback for machines without namespaces, forced here; weaker, but it must still refuse."""
    limits = SandboxLimits(isolation="hooks-only", allow_weak=True, cpu_s=2, wall_s=5)
    outside = tmp_path / "outside.txt"
    result = await run_python(f"open({str(outside)!r}, 'w').write('x')", limits=limits)
    assert result.status == "failed" and not outside.exists(), result
    assert result.isolation == "hooks-only"
    result = await run_python("import socket\nsocket.socket().connect(('127.0.0.1', 9))", limits=limits)
    assert result.status == "failed" and "Permission denied" in result.stderr, result  # seccomp: no socket()
    no_filter = SandboxLimits(isolation="hooks-only", allow_weak=True, seccomp=False, cpu_s=2, wall_s=5)
    result = await run_python("import socket\nsocket.socket().connect(('127.0.0.1', 9))", limits=no_filter)
    assert result.status == "failed" and "socket.connect is not allowed" in result.stderr, result
    result = await run_python("import ctypes", limits=limits)
    assert result.status == "failed" and "not allowed" in result.stderr, result
    with pytest.raises(ValueError):
        SandboxLimits(isolation="hooks-only", audit_hooks=False)


async def test_concurrent_runs_are_independent() -> None:
    results = await asyncio.gather(*(run_python(f"print({i} * 2)") for i in range(6)))
    assert [r.stdout for r in results] == [f"{i * 2}\n" for i in range(6)]


async def test_user_namespace_mode_alone_refuses_network_and_writes(tmp_path: Path) -> None:
    """The unprivileged-namespace fallback, forced, with the hooks off to see the kernel layer alone."""
    limits = SandboxLimits(isolation="user-ns", audit_hooks=False, seccomp=False, cpu_s=2, wall_s=5)
    probe = await run_python("print('up')", limits=limits)
    if probe.status == "error":
        pytest.skip(f"user namespaces unavailable here: {probe.detail}")
    assert probe.status == "ok" and probe.isolation == "user-ns", probe
    outside = tmp_path / "outside.txt"
    result = await run_python(f"open({str(outside)!r}, 'w').write('x')", limits=limits)
    assert result.status == "failed" and not outside.exists(), result
    result = await run_python("import socket\nsocket.socket().connect(('127.0.0.1', 9))", limits=limits)
    assert result.status == "failed" and "Network is unreachable" in result.stderr, result
