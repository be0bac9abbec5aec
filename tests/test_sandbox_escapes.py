"""The escapes of issue 10, tried in every sandbox mode this machine can run. Each test fails if the
escape works. Modes: "root-ns" (the service is root), "user-ns" (unprivileged namespaces, as in a
Kubernetes pod with the sandbox seccomp profile or gVisor), "hooks-only" (weak: opted into here with
allow_weak; what a pod under plain RuntimeDefault seccomp could do: seccomp, Landlock where present,
audit hooks). Kernel-layer cases also run with the
audit hooks off, to show the kernel holds on its own."""

from __future__ import annotations

import base64
import glob
import json
import os
import socket
import subprocess
import sys
import sysconfig
import uuid
from pathlib import Path

import pytest

from services.sandbox import SandboxLimits, run_python, run_python_sync

LIMITS = {"cpu_s": 5, "wall_s": 10, "max_procs": 16}
NS_MODES = ("root-ns", "user-ns")


def _limits(mode: str, **extra: object) -> SandboxLimits:
    return SandboxLimits(isolation=mode, allow_weak=mode == "hooks-only", **{**LIMITS, **extra})  # type: ignore[arg-type]


@pytest.fixture(scope="module", params=["root-ns", "user-ns", "hooks-only"])
def mode(request: pytest.FixtureRequest) -> str:
    probe = run_python_sync("print('up')", limits=_limits(request.param))
    if probe.status != "ok" or probe.isolation != request.param:
        pytest.skip(f"mode {request.param} does not run on this machine: {probe.detail or probe.status}")
    return request.param


@pytest.fixture(params=[True, False], ids=["hooks", "no-hooks"])
def hooks(request: pytest.FixtureRequest, mode: str) -> bool:
    if not request.param and mode not in NS_MODES:
        pytest.skip("hooks-only without its hooks is refused by design")
    return request.param


def _extension_module() -> str:
    dynload = os.path.join(sysconfig.get_path("platstdlib", vars={"platbase": sys.base_prefix}), "lib-dynload")
    found = sorted(glob.glob(os.path.join(dynload, "math.*.so")))
    if not found:
        pytest.skip("no math extension module in lib-dynload to copy")
    return found[0]


async def test_native_so_written_by_the_code_does_not_load(mode: str, hooks: bool) -> None:
    """The issue's payload: write a .so, load it with ExtensionFileLoader (here a copy of the stdlib's
    math module, so no compiler is needed; any code in it would run the same way)."""
    payload = base64.b64encode(Path(_extension_module()).read_bytes()).decode()  # the run may not read it
    code = (
        "import base64, importlib.machinery, importlib.util, os\n"
        f"data = base64.b64decode({payload!r})\n"
        "open('evil.so', 'wb').write(data)\n"
        "path = os.path.abspath('evil.so')\n"
        "loader = importlib.machinery.ExtensionFileLoader('math', path)\n"
        "spec = importlib.util.spec_from_file_location('math', path, loader=loader)\n"
        "module = importlib.util.module_from_spec(spec)\n"
        "print('NATIVE LOADED', module.sqrt(4))\n"
    )
    result = await run_python(code, limits=_limits(mode, audit_hooks=hooks))
    assert "NATIVE LOADED" not in result.stdout, result
    assert result.status == "failed", result


async def test_memfd_and_executable_memory_are_refused(mode: str) -> None:
    code = (
        "import mmap, os\n"
        "for attempt in ('memfd', 'rwx'):\n"
        "    try:\n"
        "        if attempt == 'memfd':\n"
        "            os.memfd_create('x')\n"
        "        else:\n"
        "            mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)\n"
        "        print('ALLOWED', attempt)\n"
        "    except OSError as e:\n"
        "        print('refused', attempt, e.errno)\n"
    )
    result = await run_python(code, limits=_limits(mode, audit_hooks=False) if mode in NS_MODES else _limits(mode))
    assert result.status == "ok", result
    assert "ALLOWED" not in result.stdout, result.stdout


async def test_cffi_from_the_base_interpreter_is_not_importable(mode: str, hooks: bool) -> None:
    """-S leaves site-packages off sys.path; the code puts it back, as the issue's payload did."""
    paths = {sysconfig.get_path("purelib", vars={"base": sys.base_prefix}),
             sysconfig.get_path("platlib", vars={"platbase": sys.base_prefix}), *sys.path}
    paths = {p for p in paths if p and ("site-packages" in p or "dist-packages" in p)}
    code = (
        "import sys\n"
        f"sys.path.extend({sorted(paths)!r})\n"
        "import cffi\n"
        "ffi = cffi.FFI()\n"
        "ffi.cdef('int getpid(void);')\n"
        "print('CFFI WORKS', ffi.dlopen(None).getpid())\n"
    )
    result = await run_python(code, limits=_limits(mode, audit_hooks=hooks))
    assert "CFFI WORKS" not in result.stdout, result
    assert result.status == "failed", result


async def test_environ_of_the_service_is_not_readable(mode: str, hooks: bool) -> None:
    secret = f"sandbox-secret-{uuid.uuid4().hex}"
    os.environ["CONCLAVE_TEST_ESCAPE_SECRET"] = secret
    try:
        code = (
            f"for pid in ({os.getpid()}, {os.getppid()}):\n"
            "    try:\n"
            "        print(open(f'/proc/{pid}/environ', 'rb').read())\n"
            "    except OSError as e:\n"
            "        print('refused', type(e).__name__)\n"
        )
        result = await run_python(code, limits=_limits(mode, audit_hooks=hooks))
    finally:
        del os.environ["CONCLAVE_TEST_ESCAPE_SECRET"]
    assert secret not in result.stdout, result
    assert "CONCLAVE_TEST_ESCAPE_SECRET" not in result.stdout


async def test_host_processes_are_neither_seen_nor_signalled(mode: str, hooks: bool) -> None:
    me = os.getpid()
    code = (
        "import os, signal\n"
        "try:\n"
        f"    print('SEEN' if '{me}' in os.listdir('/proc') else 'not seen')\n"
        "except OSError as e:\n"
        "    print('no listing', type(e).__name__)\n"
        "try:\n"
        f"    os.kill({me}, signal.SIGCONT)\n"  # harmless if it arrived: it must not
        "    print('SIGNALLED')\n"
        "except OSError as e:\n"
        "    print('refused', type(e).__name__)\n"
    )
    result = await run_python(code, limits=_limits(mode, audit_hooks=hooks))
    assert "SEEN" not in result.stdout and "SIGNALLED" not in result.stdout, result


async def test_never_runs_as_root(mode: str, hooks: bool) -> None:
    code = "import os\nprint(os.getuid(), os.geteuid(), os.getgid())\nprint(open('/proc/self/status').read())"
    result = await run_python(code, limits=_limits(mode, audit_hooks=hooks))
    assert result.status == "ok", result
    uid, euid, gid = (int(x) for x in result.stdout.split("\n")[0].split())
    assert uid != 0 and euid != 0 and gid != 0, result.stdout
    status = dict(line.split(":", 1) for line in result.stdout.splitlines()[1:] if ":" in line)
    assert int(status["CapEff"].strip(), 16) == 0, status["CapEff"]
    assert status["NoNewPrivs"].strip() == "1"
    assert status["Seccomp"].strip() == "2"  # our filter is in force


async def test_writing_past_disk_mb_fails(mode: str, hooks: bool) -> None:
    """The issue wrote 640 MiB against a 64 MiB limit; here 8 MiB, in files of 2 MiB, up to 400 MiB."""
    code = (  # fsync: on a host disk (hooks-only) the 20 ms size poll then sees each file land
        "import os\n"
        "chunk = b'x' * (2 * 1024 * 1024)\n"
        "for i in range(200):\n"
        "    with open(f'f{i}', 'wb') as f:\n"
        "        f.write(chunk)\n"
        "        os.fsync(f.fileno())\n"
        "print('WROTE ALL')\n"
    )
    result = await run_python(code, limits=_limits(mode, audit_hooks=hooks, disk_mb=8, file_mb=2))
    assert "WROTE ALL" not in result.stdout, result
    assert result.status == "failed", result


async def test_host_dirs_outside_the_project_are_not_readable(mode: str, hooks: bool, tmp_path: Path) -> None:
    secret_file = tmp_path / "host-secret.txt"
    secret_file.write_text("host secret")
    os.chmod(tmp_path, 0o755)
    secret_file.chmod(0o644)
    code = (
        "import os\n"
        f"for path in ({str(secret_file)!r}, '/etc/passwd', '/etc/hostname', {sys.executable!r}):\n"
        "    try:\n"
        "        print('READ', path, len(open(path, 'rb').read()))\n"
        "    except OSError as e:\n"
        "        print('refused', path, type(e).__name__)\n"
        "try:\n"
        "    print(sorted(os.listdir('/')))\n"
        "except OSError:\n"
        "    print([])\n"
    )
    result = await run_python(code, limits=_limits(mode, audit_hooks=hooks))
    if any("no Landlock" in w for w in result.warnings):
        pytest.skip("hooks-only without Landlock hides only the listed paths (repo, /root, /home, secrets)")
    assert result.status == "ok", result
    assert "READ" not in result.stdout, result.stdout
    assert set(eval(result.stdout.splitlines()[-1])) <= {"dev", "etc", "lib", "lib64", "lib32", "proc", "root",  # noqa: S307
                                                        "tmp", "usr", "opt", "home", "srv", "var", "nix"}


async def test_network_connect_fails(mode: str, hooks: bool) -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        server.setblocking(False)
        port = server.getsockname()[1]
        code = f"import socket\ns = socket.socket()\ns.settimeout(2)\ns.connect(('127.0.0.1', {port}))\nprint('CONNECTED')"
        result = await run_python(code, limits=_limits(mode, audit_hooks=hooks))
        assert "CONNECTED" not in result.stdout and result.status == "failed", result
        with pytest.raises(BlockingIOError):
            server.accept()


async def test_weak_mode_is_refused_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CONCLAVE_SANDBOX_ALLOW_WEAK", raising=False)
    result = await run_python("print('RAN')", limits=SandboxLimits(isolation="hooks-only"))
    assert result.status == "refused", result
    assert "RAN" not in result.stdout
    assert "CONCLAVE_SANDBOX_ALLOW_WEAK" in result.detail
    monkeypatch.setenv("CONCLAVE_SANDBOX_ALLOW_WEAK", "1")
    opted_in = await run_python("print('RAN')", limits=SandboxLimits(isolation="hooks-only"))
    assert opted_in.status == "ok" and opted_in.stdout == "RAN\n", opted_in


# A service process under a filter like the container runtimes' RuntimeDefault for a pod without
# CAP_SYS_ADMIN: unshare, mount, pivot_root and setns refused with EPERM. Then it runs sandboxed code.
_UNDER_RUNTIME_DEFAULT = r"""
import json, os, sys
sys.path.insert(0, {sandbox_dir!r})
import _seccomp, _syscalls as sc
nr = sc.syscall_numbers()
prog = [_seccomp._ins(0x20, 0)]
for name in ("unshare", "mount", "pivot_root", "setns"):
    prog += [_seccomp._ins(0x15, nr[name], 0, 1), _seccomp._ins(0x06, 0x00050000 | 1)]
prog.append(_seccomp._ins(0x06, 0x7FFF0000))
sc.prctl(sc.PR_SET_NO_NEW_PRIVS, 1)
sc.install_filter(b"".join(prog))
del sys.path[0]
sys.path.insert(0, {repo!r})
from services.sandbox import SandboxLimits, run_python_sync
os.environ.pop("CONCLAVE_SANDBOX_ALLOW_WEAK", None)
out = {{"default": run_python_sync("print('RAN')").__dict__}}
escape = ("import os\nfor p in ('/etc/passwd', {outside!r}, f'/proc/{{os.getppid()}}/environ'):\n"
          "    try:\n        open(p).read()\n        print('READ', p)\n"
          "    except OSError as e:\n        print('refused', p)\n")
out["weak"] = run_python_sync(escape, limits=SandboxLimits(allow_weak=True)).__dict__
print(json.dumps(out))
"""


def test_under_a_runtime_default_like_filter_auto_is_refused_and_weak_still_holds(tmp_path: Path) -> None:
    from services.sandbox import _syscalls

    if _syscalls.syscall_numbers() is None:
        pytest.skip(f"no syscall numbers for {_syscalls.ARCH}")
    outside = tmp_path / "outside.txt"
    outside.write_text("host file")
    os.chmod(tmp_path, 0o755)
    outside.chmod(0o644)
    repo = Path(__file__).resolve().parents[1]
    script = _UNDER_RUNTIME_DEFAULT.format(sandbox_dir=str(repo / "services" / "sandbox"), repo=str(repo),
                                           outside=str(outside))
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, cwd=repo)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    default, weak = out["default"], out["weak"]
    assert default["status"] == "refused" and default["isolation"] == "hooks-only", default
    assert "RAN" not in default["stdout"] and "unavailable" in default["detail"], default
    assert weak["status"] == "ok" and weak["isolation"] == "hooks-only", weak
    if any("no Landlock" in w for w in weak["warnings"]):
        pytest.skip("no Landlock on this kernel: only the refusal could be checked")
    assert "READ" not in weak["stdout"], weak["stdout"]


async def test_a_refused_run_reaches_the_grade_as_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    """What the executor reports for a code problem where only weak mode works and it is not allowed."""
    from services.evaluation.graders import grade_code

    monkeypatch.delenv("CONCLAVE_SANDBOX_ALLOW_WEAK", raising=False)
    grade = await grade_code("```python\ndef f():\n    return 1\n```", tests="assert f() == 1", entry_point="f",
                             limits=SandboxLimits(isolation="hooks-only"))
    assert not grade.passed and grade.status == "refused", grade
    assert "CONCLAVE_SANDBOX_ALLOW_WEAK" in grade.output
