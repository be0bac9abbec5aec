"""Sandbox bootstrap, started by the runner as `python -I -S -B -X utf8 _bootstrap.py <config-json>`.

Stdlib only and never imported by the service: it runs in the child. Process tree:

    supervisor  (this process as started; never runs untrusted code, reports on the status fd)
      init      (pid 1 of a fresh pid namespace when namespaces work; mounts, limits, drops privileges)
        user    (runs the code under a seccomp filter and audit hooks)

When init exits, the kernel kills everything left in its pid namespace, so nothing the code started
outlives the run. Status lines (JSON) go to the fd named in the config; the runner reads them.
"""

from __future__ import annotations

import json
import os
import resource
import signal
import sys

# Sibling modules, imported before anything could change them (the source tree is read-only to the code
# and absent from its root). -I keeps this dir off sys.path otherwise.
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _landlock  # noqa: E402
import _rootfs  # noqa: E402
import _seccomp  # noqa: E402
import _syscalls as sc  # noqa: E402

del sys.path[0]

NAMESPACES = sc.CLONE_NEWNS | sc.CLONE_NEWNET | sc.CLONE_NEWIPC | sc.CLONE_NEWUTS | sc.CLONE_NEWPID
EXIT_SETUP_FAILED = 70
EXIT_REFUSED = 71
# In user-ns mode the code's uid inside the namespace (mapped to the service's uid outside): not 0.
INNER_UID = 1000
_DISK_POLL_S = 0.02

# Imports the code may not make even when already loaded: native calls and raw process creation.
_DENIED_IMPORTS = frozenset(
    {"ctypes", "_ctypes", "_xxsubinterpreters", "_xxinterpchannels", "_testcapi",
     "_testinternalcapi", "_syscalls", "_seccomp", "_rootfs", "_landlock"}
)
# Events refused outright: process creation, sockets that reach out, name resolution (libc would open
# its own sockets, bypassing socket.connect), sub-interpreters (they would not carry our hooks), rlimits,
# and the gc walks that could find and patch the hook.
_DENIED_EVENTS = frozenset(
    {"os.fork", "os.forkpty", "os.system", "os.exec", "os.posix_spawn", "os.spawn", "os.startfile",
     "subprocess.Popen", "pty.spawn", "os.killpg", "os.link", "os.symlink",
     "socket.connect", "socket.bind", "socket.sendto", "socket.sendmsg", "socket.getaddrinfo",
     "socket.gethostbyname", "socket.gethostbyaddr", "socket.getnameinfo",
     "cpython.PyInterpreterState_New", "resource.setrlimit", "resource.prlimit",
     "gc.get_objects", "gc.get_referrers", "gc.get_referents"}
)
_PATH_EVENTS = frozenset(
    {"os.remove", "os.rmdir", "os.mkdir", "os.chmod", "os.chown", "os.utime", "os.truncate",
     "os.setxattr", "os.removexattr", "os.chflags", "os.lchflags"}
)
# Of those, the ones whose last audit argument is a dir_fd (relative paths we could not resolve).
_DIR_FD_EVENTS = frozenset({"os.remove", "os.rmdir", "os.mkdir", "os.chmod", "os.chown", "os.utime"})
_READ_PATH_EVENTS = frozenset({"os.listdir", "os.scandir", "os.chdir", "glob.glob", "os.listxattr"})


def _send(fd: int, **event: object) -> None:
    try:
        os.write(fd, (json.dumps(event) + "\n").encode())
    except OSError:
        pass


# ------------------------------------------------------------------------------------------ isolation


def _become(uid: int, gid: int) -> None:
    os.setgroups([])
    os.setresgid(gid, gid, gid)
    os.setresuid(uid, uid, uid)


def _tasks_of(uid: int) -> int:
    """Threads the host already runs as `uid`: RLIMIT_NPROC counts them too."""
    count = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/status") as f:
                fields = dict(line.split(":", 1) for line in f if ":" in line)
        except OSError:
            continue
        if int(fields.get("Uid", "-1 0").split()[1]) == uid:
            count += int(fields.get("Threads", "1"))
    return count


def _isolate(cfg: dict) -> tuple[str, list[str], int]:
    """Enter new namespaces (supervisor side). Returns (isolation, warnings, nproc limit)."""
    wanted, uid, gid = cfg["isolation"], cfg["uid"], cfg["gid"]
    warnings: list[str] = []
    was_root = os.geteuid() == 0
    if wanted in ("auto", "root-ns") and was_root:
        try:
            sc.unshare(NAMESPACES)
            return "root-ns", warnings, cfg["max_procs"]
        except OSError as e:
            if wanted == "root-ns":
                raise
            warnings.append(f"root namespaces unavailable ({e}); trying a user namespace")
    if wanted == "auto" and was_root and not _userns_works(uid, gid):
        warnings.append("user namespaces unavailable (probe failed)")
    elif wanted in ("auto", "user-ns"):
        try:
            if os.geteuid() == 0:
                # Leave root before the user namespace, so the mapped uid is an unprivileged one.
                _become(uid, gid)
                sc.prctl(sc.PR_SET_DUMPABLE, 1)  # setuid made /proc/self root-owned; we must write uid_map
            outer_uid, outer_gid = os.geteuid(), os.getegid()
            nproc = _tasks_of(outer_uid) + cfg["max_procs"]
            sc.unshare(sc.CLONE_NEWUSER | NAMESPACES)
            with open("/proc/self/setgroups", "w") as f:
                f.write("deny")
            with open("/proc/self/uid_map", "w") as f:
                f.write(f"{INNER_UID} {outer_uid} 1")
            with open("/proc/self/gid_map", "w") as f:
                f.write(f"{INNER_UID} {outer_gid} 1")
            return "user-ns", warnings, nproc
        except OSError as e:
            if wanted == "user-ns":
                raise
            warnings.append(f"user namespaces unavailable ({e})")
    if was_root:  # init will run as the run's own uid (or stay root, where RLIMIT_NPROC is not enforced)
        return "hooks-only", warnings, cfg["max_procs"] + 1  # + this supervisor, if it already left root
    return "hooks-only", warnings, _tasks_of(os.geteuid()) + cfg["max_procs"]


def _userns_works(uid: int, gid: int) -> bool:
    """Probe in a throwaway child: leaving root first is irreversible, so we only do it if it pays off."""
    pid = os.fork()
    if pid == 0:
        try:
            _become(uid, gid)
            sc.unshare(sc.CLONE_NEWUSER)
        except BaseException:  # noqa: BLE001
            os._exit(1)
        os._exit(0)
    _, wstatus = os.waitpid(pid, 0)
    return os.WIFEXITED(wstatus) and os.WEXITSTATUS(wstatus) == 0


def _set_rlimits(cfg: dict) -> None:
    mib = 1024 * 1024
    cpu = max(1, int(-(-cfg["cpu_s"] // 1)))
    # Soft == hard, so the code cannot raise any of them back. CPU: SIGXCPU, then SIGKILL a second later.
    for res, value in ((resource.RLIMIT_AS, cfg["memory_mb"] * mib), (resource.RLIMIT_FSIZE, cfg["file_mb"] * mib),
                       (resource.RLIMIT_CORE, 0), (resource.RLIMIT_NOFILE, cfg["open_files"])):
        resource.setrlimit(res, (value, value))
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))


# ------------------------------------------------------------------------------------- audit hooks


def _install_hooks(wd: str, hidden: tuple[str, ...], keep: str, native_dirs: tuple[str, ...], *,
                   strict: bool) -> None:
    """Second layer (the only one in hooks-only mode). PEP 578 hooks are not a security boundary
    against code that can reach native memory; ctypes & co are refused to make that harder.
    `strict` also refuses _posixsubprocess (so subprocess and asyncio): a binary it execs would run
    without our hooks, and in hooks-only mode nothing else would stop it. Extension modules load only
    from `native_dirs` (the stdlib's); /proc of any other process is hidden."""
    imports = _DENIED_IMPORTS | {"_posixsubprocess"} if strict else _DENIED_IMPORTS
    write_flags = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
    dev_ok = frozenset({"/dev/null", "/dev/stdout", "/dev/stderr", "/dev/zero"})

    # Everything the hook needs is bound as a default, so rebinding module globals cannot change it;
    # nothing but the interpreter's hook list refers to it, and the gc walks that could find it are refused.
    def hook(event: str, args: tuple, *, _wd: str = wd.rstrip("/") + "/", _hidden: tuple = hidden,
             _keep: str = keep.rstrip("/") + "/",
             _denied: frozenset = _DENIED_EVENTS, _paths: frozenset = _PATH_EVENTS,
             _reads: frozenset = _READ_PATH_EVENTS, _imports: frozenset = imports,
             _dir_fd: frozenset = _DIR_FD_EVENTS, _native: tuple = tuple(d.rstrip("/") + "/" for d in native_dirs),
             _wflags: int = write_flags, _dev_ok: frozenset = dev_ok, _os=os) -> None:
        if event in _denied or event.startswith("ctypes."):
            raise PermissionError(f"sandbox: {event} is not allowed")
        if event == "import":
            if args[0] in _imports:
                raise ImportError(f"sandbox: import of {args[0]!r} is not allowed")
            # A file name comes only with extension modules (dlopen): the stdlib's own, nothing written.
            if args[1] is not None:
                real = _os.path.realpath(_os.fsdecode(args[1]))
                if not real.startswith(_native) or "/site-packages/" in real or "/dist-packages/" in real:
                    raise ImportError(f"sandbox: loading native code from {args[1]!r} is not allowed")
            return
        if event == "os.kill":
            if args[0] != _os.getpid():
                raise PermissionError("sandbox: signalling other processes is not allowed")
            return

        def resolve(p: object, dir_fd: object = -1) -> str | None:
            if isinstance(p, int) or p is None:
                return None  # an already-open fd: it was checked when opened
            s = _os.fsdecode(p)
            if not _os.path.isabs(s):
                if dir_fd not in (None, -1):  # shutil.rmtree and friends work relative to an fd
                    try:
                        base = _os.readlink(f"/proc/self/fd/{dir_fd}")
                    except OSError:  # no /proc (namespace modes in Kubernetes): the kernel bounds writes
                        return None
                else:
                    base = _os.getcwd()
                s = _os.path.join(base, s)
            return _os.path.realpath(s)

        def inside(real: str | None) -> bool:
            return real is None or real == _wd[:-1] or real.startswith(_wd)

        def is_hidden(real: str | None) -> bool:
            if real is None or real.startswith(_keep):
                return False
            if real == "/proc":  # the list of host processes
                return True
            if real.startswith("/proc/"):  # other processes' environ, maps, fds
                entry = real.split("/")[2]
                if entry.isdigit() and int(entry) != _os.getpid():
                    return True
            return any(real == h or real.startswith(h + "/") for h in _hidden)

        if event == "open":
            path, mode, flags = args
            if isinstance(path, int):
                return
            if _os.path.normpath(_os.fsdecode(path)) in _dev_ok:
                return
            real = resolve(path)
            if is_hidden(real):
                raise PermissionError(f"sandbox: {real} is hidden")
            writing = (isinstance(mode, str) and any(c in mode for c in "wax+")) or bool((flags or 0) & _wflags)
            if writing and not inside(real):
                raise PermissionError(f"sandbox: writing outside the working dir is not allowed: {real}")
            if not inside(real) and _os.path.isdir(real):
                # An fd on an outside dir would let os.open(name, dir_fd=fd) write where we cannot see.
                raise PermissionError(f"sandbox: opening directories outside the working dir is not allowed: {real}")
        elif event in _paths:
            real = resolve(args[0], args[-1] if event in _dir_fd else -1)
            if not inside(real):
                raise PermissionError(f"sandbox: {event} outside the working dir is not allowed: {real}")
        elif event == "os.rename":
            if not (inside(resolve(args[0], args[2])) and inside(resolve(args[1], args[3]))):
                raise PermissionError("sandbox: os.rename outside the working dir is not allowed")
        elif event in _reads:
            if args and is_hidden(resolve(args[0])):
                raise PermissionError(f"sandbox: {args[0]} is hidden")

    sys.addaudithook(hook)


# ----------------------------------------------------------------------------------------- roles


def _supervise(status_fd: int, init_pid: int, disk_watch: tuple[str, int] | None) -> None:
    """Wait for init, then kill whatever it left behind. We are a child subreaper, so every orphan
    of the run (even one that called setsid) becomes our child instead of escaping to the host.
    `disk_watch` (dir, bytes): without a tmpfs of its own (hooks-only), the run is killed once its dir
    holds more than that."""
    if disk_watch is not None:
        import threading

        threading.Thread(target=_watch_disk, args=(status_fd, init_pid, *disk_watch), daemon=True).start()
    try:
        _, wstatus, _ = os.wait4(init_pid, 0)
    except ChildProcessError:
        wstatus = 0
    _sweep_children()
    _send(status_fd, event="init-exit", **_decode(wstatus))
    os._exit(0)


def _disk_used(path: str) -> int:
    used = 0
    stack = [path]
    while stack:
        try:
            with os.scandir(stack.pop()) as entries:
                for entry in entries:
                    st = entry.stat(follow_symlinks=False)
                    used += st.st_blocks * 512
                    if entry.is_dir(follow_symlinks=False):
                        stack.append(entry.path)
        except OSError:
            continue
    return used


def _watch_disk(status_fd: int, init_pid: int, path: str, limit: int) -> None:
    """Polled, so a fast writer may go over by what it writes in one interval (RLIMIT_FSIZE still
    bounds each file); the namespace modes enforce the limit exactly with a sized tmpfs."""
    import time

    while True:
        time.sleep(_DISK_POLL_S)
        if _disk_used(path) > limit:
            _send(status_fd, event="disk", limit=limit)
            try:
                os.kill(init_pid, signal.SIGKILL)
            except OSError:
                pass
            return


def _sweep_children() -> None:
    import time

    me = str(os.getpid())
    idle_rounds = 0
    while idle_rounds < 3:  # orphans of the killed ones reparent to us in between: look again
        found = False
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                with open(f"/proc/{entry}/stat") as f:
                    ppid = f.read().rsplit(")", 1)[1].split()[1]
            except (OSError, IndexError):
                continue
            if ppid == me:
                found = True
                try:
                    os.kill(int(entry), signal.SIGKILL)
                except OSError:
                    pass
        while True:
            try:
                pid, _ = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                break
        idle_rounds = 0 if found else idle_rounds + 1
        if found:
            time.sleep(0.005)


def _decode(wstatus: int) -> dict:
    if os.WIFSIGNALED(wstatus):
        return {"code": None, "signal": os.WTERMSIG(wstatus)}
    return {"code": os.WEXITSTATUS(wstatus), "signal": None}


def _world_readable(path: str) -> bool:
    """Whether an unprivileged uid could import from `path` (every ancestor searchable by others)."""
    import stat

    while True:
        try:
            mode = os.stat(path).st_mode
        except OSError:
            return False
        if not mode & stat.S_IXOTH:
            return False
        parent = os.path.dirname(path)
        if parent == path:
            return True
        path = parent


def _import_through_fds(stdlib: list[str]) -> None:
    """hooks-only as root, with the stdlib under a dir other users cannot enter (/root/.pyenv): keep it
    importable after the uid drop through descriptors opened now. /proc/self/fd/N reaches the dir
    itself without the check on its ancestors; the dir and its files stay as readable as they are."""
    via = {path: f"/proc/self/fd/{os.open(path, os.O_RDONLY | os.O_DIRECTORY)}" for path in stdlib}

    def remap(entry: str) -> str:
        real = os.path.realpath(entry)
        for path, fd_path in via.items():
            if real == path or real.startswith(path + "/"):
                return fd_path + real[len(path):]
        return entry

    sys.path[:] = list(via.values())
    sys.path_importer_cache.clear()
    for module in list(sys.modules.values()):  # packages already imported look up submodules here
        search = getattr(module, "__path__", None)
        if isinstance(search, list):
            search[:] = [remap(p) for p in search]


def _landlock_weak_mode(cfg: dict) -> bool:
    """hooks-only: the files the code may read (stdlib as sys.path reaches it now, libraries, its own
    /proc entry) and write (its dir), enforced by the kernel. False where Landlock is unavailable."""
    read = [p for p in sys.path if os.path.isdir(p)]
    read += [*cfg["library_files"], "/etc/ld.so.cache", f"/proc/{os.getpid()}"]
    devices = ["/dev/null", "/dev/zero", "/dev/random", "/dev/urandom"]
    return _landlock.restrict(read=read, write=[cfg["workdir"]], devices=devices) > 0


def _run_init(cfg: dict, setup: dict, code: str, status_fd: int, mem_r: int, mem_w: int) -> None:
    """Returns only in the user process; init itself ends with os._exit."""
    isolation = setup["isolation"]
    warnings: list[str] = []
    wd = cfg["workdir"]
    try:
        if isolation in ("root-ns", "user-ns"):
            owner = (INNER_UID, INNER_UID) if isolation == "user-ns" else (cfg["uid"], cfg["gid"])
            _rootfs.build(cfg, setup["trees"], owner, warnings)
        os.chdir(wd)
        main_py = os.path.join(wd, "main.py")
        if isolation != "hooks-only":  # the tmpfs is empty: put the source back for tracebacks
            with open(main_py, "w", encoding="utf-8") as f:
                f.write(code)
        _set_rlimits(cfg)
        if isolation == "user-ns":
            sc.drop_capabilities()
        elif os.geteuid() == 0:
            if isolation == "root-ns":
                os.chown(main_py, cfg["uid"], cfg["gid"])
            elif not _world_readable(setup["keep"]):
                _import_through_fds(cfg["stdlib_dirs"])
            _become(cfg["uid"], cfg["gid"])
        resource.setrlimit(resource.RLIMIT_NPROC, (setup["nproc"], setup["nproc"]))
        sc.prctl(sc.PR_SET_NO_NEW_PRIVS, 1)
        sc.prctl(sc.PR_SET_DUMPABLE, 0)  # the code runs under the same uid; it must not ptrace or read us
        sc.prctl(sc.PR_SET_PDEATHSIG, signal.SIGKILL)  # set after the uid change, which clears it
    except BaseException as e:  # noqa: BLE001 - any failure here must reach the runner, not a traceback
        _send(status_fd, event="error", message=f"sandbox setup failed: {type(e).__name__}: {e}")
        os._exit(EXIT_SETUP_FAILED)
    if warnings:
        _send(status_fd, event="warnings", warnings=warnings)
    user_pid = os.fork()
    if user_pid == 0:
        os.close(mem_r)
        try:
            if isolation == "hooks-only" and not _landlock_weak_mode(cfg):
                _send(status_fd, event="warnings", warnings=["no Landlock here: the code can read every host file "
                                                             "its uid can (the audit hooks hide a few paths)"])
        except OSError as e:
            _send(status_fd, event="error", message=f"sandbox setup failed: landlock: {e}")
            os._exit(EXIT_SETUP_FAILED)
        try:
            if cfg["seccomp"] and not _seccomp.install(weak=isolation == "hooks-only", pid=os.getpid()):
                _send(status_fd, event="warnings", warnings=[f"no seccomp filter: syscall numbers unknown on "
                                                              f"{sc.ARCH}"])
        except OSError as e:
            _send(status_fd, event="error", message=f"sandbox setup failed: seccomp: {e}")
            os._exit(EXIT_SETUP_FAILED)
        os.close(status_fd)
        return
    os.close(mem_w)
    while True:  # as pid 1 we also reap orphans; stop when the user process is done
        try:
            pid, wstatus = os.waitpid(-1, 0)
        except ChildProcessError:
            wstatus = 0
            break
        if pid == user_pid:
            break
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    os.set_blocking(mem_r, False)
    try:
        memory = b"M" in os.read(mem_r, 16)
    except BlockingIOError:
        memory = False
    _send(status_fd, event="exit", cpu_s=usage.ru_utime + usage.ru_stime, memory=memory, **_decode(wstatus))
    os._exit(0)


def _run_user(cfg: dict, setup: dict, code: str, mem_w: int) -> None:
    import builtins
    import traceback
    import types

    sc.prctl(sc.PR_SET_PDEATHSIG, signal.SIGKILL)
    sc.prctl(sc.PR_SET_DUMPABLE, 1)  # our own /proc/self stays ours; init is not dumpable
    for name in [m for m in sys.modules if m in ("ctypes", "_syscalls", "_seccomp", "_rootfs", "_landlock")
                 or m.startswith(("ctypes.", "_ctypes"))]:
        del sys.modules[name]
    if cfg["audit_hooks"]:
        native = tuple(cfg["stdlib_dirs"])
        _install_hooks(cfg["workdir"], tuple(os.path.realpath(p) for p in cfg["hide_paths"]), setup["keep"],
                       native, strict=setup["isolation"] == "hooks-only")
    sys.argv = ["main.py"]
    module = types.ModuleType("__main__")
    module.__file__ = os.path.join(cfg["workdir"], "main.py")
    module.__builtins__ = builtins  # type: ignore[attr-defined]
    sys.modules["__main__"] = module
    exit_code = 0
    try:
        exec(compile(code, "main.py", "exec"), module.__dict__)  # noqa: S102 - running it is the point
    except SystemExit:
        raise
    except MemoryError as e:
        os.write(mem_w, b"M")
        traceback.print_exception(type(e), e, e.__traceback__.tb_next if e.__traceback__ else None)
        exit_code = 1
    except BaseException as e:  # noqa: BLE001 - report like the interpreter would, minus our frame
        traceback.print_exception(type(e), e, e.__traceback__.tb_next if e.__traceback__ else None)
        exit_code = 1
    raise SystemExit(exit_code)


def main() -> tuple[dict, dict, str, int]:
    """Supervisor. Returns only in the user process."""
    cfg = json.loads(sys.argv[1])
    status_fd = cfg["status_fd"]
    try:
        with open(os.path.join(cfg["workdir"], "main.py"), encoding="utf-8") as f:
            code = f.read()
        keep = os.path.realpath(sys.base_prefix)
        cfg["stdlib_dirs"] = _rootfs.stdlib_dirs()  # now: a dropped uid may not be able to stat them
        may_drop = os.geteuid() == 0 and cfg["isolation"] in ("auto", "user-ns")
        trees = _rootfs.detach_unreachable(cfg) if may_drop else {}
        isolation, warnings, nproc = _isolate(cfg)
        if isolation == "hooks-only" and not cfg["audit_hooks"]:
            raise RuntimeError("no namespaces here and audit hooks are off: refusing to run unguarded")
    except BaseException as e:  # noqa: BLE001
        _send(status_fd, event="error", message=f"sandbox isolation failed: {type(e).__name__}: {e}")
        os._exit(EXIT_SETUP_FAILED)
    if isolation == "hooks-only" and not cfg["allow_weak"]:
        _send(status_fd, event="refused", isolation=isolation, warnings=warnings)
        os._exit(EXIT_REFUSED)
    setup = {"isolation": isolation, "nproc": nproc, "keep": keep, "trees": trees}
    try:
        sc.prctl(sc.PR_SET_CHILD_SUBREAPER, 1)
    except OSError as e:
        warnings.append(f"not a subreaper ({e}): orphans of the code may outlive the run")
    mem_r, mem_w = os.pipe()
    init_pid = os.fork()
    if init_pid == 0:
        _run_init(cfg, setup, code, status_fd, mem_r, mem_w)
        return cfg, setup, code, mem_w
    for fd in (mem_r, mem_w, *trees.values()):
        os.close(fd)
    if isolation == "hooks-only":
        # Same uid as the code where we are not root: /proc/<us>/mem must not be writable to it.
        sc.prctl(sc.PR_SET_DUMPABLE, 0)
    _send(status_fd, event="started", pid=init_pid, isolation=isolation, warnings=warnings)
    disk = (cfg["workdir"], cfg["disk_mb"] * 1024 * 1024) if isolation == "hooks-only" else None
    _supervise(status_fd, init_pid, disk)
    raise AssertionError("unreachable")


if __name__ == "__main__":
    _cfg, _setup, _code, _mem_w = main()
    _run_user(_cfg, _setup, _code, _mem_w)
