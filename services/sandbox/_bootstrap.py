"""Sandbox bootstrap, started by the runner as `python -I -S -B -X utf8 _bootstrap.py <config-json>`.

Stdlib only and never imported by the service: it runs in the child. Process tree:

    supervisor  (this process as started; never runs untrusted code, reports on the status fd)
      init      (pid 1 of a fresh pid namespace when namespaces work; mounts, limits, drops privileges)
        user    (runs the code under audit hooks)

When init exits, the kernel kills everything left in its pid namespace, so nothing the code started
outlives the run. Status lines (JSON) go to the fd named in the config; the runner reads them.
"""

from __future__ import annotations

import ctypes  # loaded before any privilege drop: later the stdlib dir may not be readable to us
import json
import os
import resource
import signal
import sys

CLONE_NEWNS = 0x00020000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000

MS_RDONLY = 0x1
MS_NOSUID = 0x2
MS_NODEV = 0x4
MS_NOEXEC = 0x8
MS_REMOUNT = 0x20
MS_NOATIME = 0x400
MS_NODIRATIME = 0x800
MS_BIND = 0x1000
MS_REC = 0x4000
MS_PRIVATE = 0x40000
MS_RELATIME = 0x200000

# New mount API (5.2+/5.12+): the same numbers on every architecture (the unified syscall table).
SYS_OPEN_TREE = 428
SYS_MOVE_MOUNT = 429
SYS_MOUNT_SETATTR = 442
OPEN_TREE_CLONE = 0x1
MOVE_MOUNT_F_EMPTY_PATH = 0x4
AT_FDCWD = -100
AT_RECURSIVE = 0x8000
MOUNT_ATTR_RDONLY = 0x1

PR_SET_PDEATHSIG = 1
PR_SET_DUMPABLE = 4
PR_CAPBSET_DROP = 24
PR_SET_SECUREBITS = 28
PR_SET_CHILD_SUBREAPER = 36
PR_SET_NO_NEW_PRIVS = 38
SECBIT_NOROOT_AND_LOCK = 0x3

NAMESPACES = CLONE_NEWNS | CLONE_NEWNET | CLONE_NEWIPC | CLONE_NEWUTS | CLONE_NEWPID
EXIT_SETUP_FAILED = 70

# Imports the code may not make even when already loaded: native calls and raw process creation.
_DENIED_IMPORTS = frozenset(
    {"ctypes", "_ctypes", "_xxsubinterpreters", "_xxinterpchannels", "_testcapi",
     "_testinternalcapi"}
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


# ---------------------------------------------------------------------------------------------- libc


def _libc():  # type: ignore[no-untyped-def]
    return ctypes, ctypes.CDLL(None, use_errno=True)


def _check(ret: int, what: str) -> None:
    if ret != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def _unshare(flags: int) -> None:
    _, libc = _libc()
    _check(libc.unshare(flags), "unshare")


def _prctl(option: int, arg: int) -> None:
    _, libc = _libc()
    _check(libc.prctl(option, ctypes.c_ulong(arg), ctypes.c_ulong(0), ctypes.c_ulong(0), ctypes.c_ulong(0)),
           f"prctl({option})")


def _mount(source: str | None, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    _, libc = _libc()
    enc = (lambda s: None if s is None else s.encode())  # noqa: E731
    _check(libc.mount(enc(source), enc(target), enc(fstype), flags, enc(data)), f"mount {target}")


def _mount_setattr(path: str, attr_set: int, attr_clr: int, recursive: bool) -> None:
    ctypes, libc = _libc()

    class MountAttr(ctypes.Structure):
        _fields_ = [("attr_set", ctypes.c_uint64), ("attr_clr", ctypes.c_uint64),
                    ("propagation", ctypes.c_uint64), ("userns_fd", ctypes.c_uint64)]

    attr = MountAttr(attr_set, attr_clr, 0, 0)
    flags = AT_RECURSIVE if recursive else 0
    ret = libc.syscall(ctypes.c_long(SYS_MOUNT_SETATTR), ctypes.c_int(AT_FDCWD), path.encode(),
                       ctypes.c_uint(flags), ctypes.byref(attr), ctypes.c_size_t(ctypes.sizeof(attr)))
    _check(ret, f"mount_setattr {path}")


def _open_tree_clone(path: str) -> int:
    """A detached copy of the mount tree at `path`: usable from another mount namespace."""
    ctypes, libc = _libc()
    fd = libc.syscall(ctypes.c_long(SYS_OPEN_TREE), ctypes.c_int(AT_FDCWD), path.encode(),
                      ctypes.c_uint(OPEN_TREE_CLONE | AT_RECURSIVE))
    if fd < 0:
        _check(-1, f"open_tree {path}")
    return int(fd)


def _move_mount(tree_fd: int, target: str) -> None:
    ctypes, libc = _libc()
    ret = libc.syscall(ctypes.c_long(SYS_MOVE_MOUNT), ctypes.c_int(tree_fd), b"", ctypes.c_int(AT_FDCWD),
                       target.encode(), ctypes.c_uint(MOVE_MOUNT_F_EMPTY_PATH))
    _check(ret, f"move_mount {target}")


def _umount_detach(target: str) -> None:
    _, libc = _libc()
    libc.umount2(target.encode(), 2)  # MNT_DETACH; best effort


def _drop_capabilities() -> None:
    """In a user namespace we are uid 0 with every capability in it; give them all up for good."""
    ctypes, libc = _libc()
    cap = 0
    while True:
        if libc.prctl(PR_CAPBSET_DROP, ctypes.c_ulong(cap), 0, 0, 0) != 0:
            break  # EINVAL past the last capability this kernel knows
        cap += 1
    _prctl(PR_SET_SECUREBITS, SECBIT_NOROOT_AND_LOCK)

    class Header(ctypes.Structure):
        _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]

    class Data(ctypes.Structure):
        _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32),
                    ("inheritable", ctypes.c_uint32)]

    header = Header(0x20080522, 0)  # _LINUX_CAPABILITY_VERSION_3
    data = (Data * 2)()
    _check(libc.capset(ctypes.byref(header), data), "capset")


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
            _unshare(NAMESPACES)
            return "root-ns", warnings, cfg["max_procs"]
        except OSError as e:
            if wanted == "root-ns":
                raise
            warnings.append(f"root namespaces unavailable ({e}); trying a user namespace")
    if wanted == "auto" and was_root and not _userns_works(uid, gid):
        warnings.append("user namespaces unavailable; only audit hooks guard network and files")
    elif wanted in ("auto", "user-ns"):
        try:
            if os.geteuid() == 0:
                # Leave root before the user namespace, so the mapped uid is an unprivileged one.
                _become(uid, gid)
                _prctl(PR_SET_DUMPABLE, 1)  # setuid made /proc/self root-owned; we must write uid_map
            outer_uid, outer_gid = os.geteuid(), os.getegid()
            nproc = _tasks_of(outer_uid) + cfg["max_procs"]
            _unshare(CLONE_NEWUSER | NAMESPACES)
            with open("/proc/self/setgroups", "w") as f:
                f.write("deny")
            with open("/proc/self/uid_map", "w") as f:
                f.write(f"0 {outer_uid} 1")
            with open("/proc/self/gid_map", "w") as f:
                f.write(f"0 {outer_gid} 1")
            return "user-ns", warnings, nproc
        except OSError as e:
            if wanted == "user-ns":
                raise
            warnings.append(f"user namespaces unavailable ({e}); only audit hooks guard network and files")
    if was_root:  # init will run as the run's own uid (or stay root, where RLIMIT_NPROC is not enforced)
        return "hooks-only", warnings, cfg["max_procs"] + 1  # + this supervisor, if it already left root
    return "hooks-only", warnings, _tasks_of(os.geteuid()) + cfg["max_procs"]


def _userns_works(uid: int, gid: int) -> bool:
    """Probe in a throwaway child: leaving root first is irreversible, so we only do it if it pays off."""
    pid = os.fork()
    if pid == 0:
        try:
            _become(uid, gid)
            _unshare(CLONE_NEWUSER)
        except BaseException:  # noqa: BLE001
            os._exit(1)
        os._exit(0)
    _, wstatus = os.waitpid(pid, 0)
    return os.WIFEXITED(wstatus) and os.WEXITSTATUS(wstatus) == 0


def _keep_visible(path: str, hidden: str) -> bool:
    return path == hidden or path.startswith(hidden.rstrip("/") + "/")


def _setup_mounts(cfg: dict, isolation: str, keep: str, keep_tree: int | None, warnings: list[str]) -> None:
    """Init side: hide secrets, give the code a private tmpfs, make everything else read-only.
    `keep` (the interpreter's prefix) stays visible through `keep_tree`, a detached copy of its mount
    tree cloned by the supervisor while it could still reach it."""
    wd = cfg["workdir"]
    _mount(None, "/", None, MS_REC | MS_PRIVATE)
    for hide in cfg["hide_paths"]:
        hide = os.path.realpath(hide)
        if hide == "/" or not os.path.isdir(hide) or _keep_visible(wd, hide):
            continue
        covers_keep = _keep_visible(keep, hide)
        if covers_keep and keep_tree is None:
            warnings.append(f"{hide} stays visible: it holds the stdlib and it could not be re-exposed")
            continue
        try:
            _mount("tmpfs", hide, "tmpfs", MS_NOSUID | MS_NODEV, "size=64k,nr_inodes=256,mode=0755")
        except OSError as e:
            warnings.append(f"could not hide {hide}: {e}")
            continue
        if covers_keep:
            try:
                os.makedirs(keep, exist_ok=True)
                _move_mount(keep_tree, keep)  # type: ignore[arg-type]
                keep_tree = None  # a detached tree attaches once
            except OSError as e:
                _umount_detach(hide)
                warnings.append(f"{hide} stays visible: re-exposing the stdlib failed: {e}")
    owner = (0, 0) if isolation == "user-ns" else (cfg["uid"], cfg["gid"])
    _mount("tmpfs", wd, "tmpfs", MS_NOSUID | MS_NODEV,
           f"size={cfg['disk_mb']}m,nr_inodes=4096,mode=0700,uid={owner[0]},gid={owner[1]}")
    try:  # a proc of the new pid namespace, so host processes are not even listed
        _mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    except OSError as e:
        warnings.append(f"host /proc stays visible: {e}")
    try:
        _mount_setattr("/", MOUNT_ATTR_RDONLY, 0, recursive=True)
        _mount_setattr(wd, 0, MOUNT_ATTR_RDONLY, recursive=False)
    except OSError:
        _remount_all_readonly(skip=wd)


def _remount_all_readonly(skip: str) -> None:
    """For kernels without mount_setattr (< 5.12): one bind-remount per mount, keeping locked flags."""
    keep_flags = {"nosuid": MS_NOSUID, "nodev": MS_NODEV, "noexec": MS_NOEXEC, "noatime": MS_NOATIME,
                  "nodiratime": MS_NODIRATIME, "relatime": MS_RELATIME}
    with open("/proc/self/mountinfo") as f:
        lines = f.read().splitlines()
    for line in lines:
        parts = line.split()
        target = parts[4].encode().decode("unicode_escape")
        if target == skip:
            continue
        flags = MS_BIND | MS_REMOUNT | MS_RDONLY
        for opt in parts[5].split(","):
            flags |= keep_flags.get(opt, 0)
        _mount(None, target, None, flags)


def _set_rlimits(cfg: dict) -> None:
    mib = 1024 * 1024
    cpu = max(1, int(-(-cfg["cpu_s"] // 1)))
    # Soft == hard, so the code cannot raise any of them back. CPU: SIGXCPU, then SIGKILL a second later.
    for res, value in ((resource.RLIMIT_AS, cfg["memory_mb"] * mib), (resource.RLIMIT_FSIZE, cfg["file_mb"] * mib),
                       (resource.RLIMIT_CORE, 0), (resource.RLIMIT_NOFILE, cfg["open_files"])):
        resource.setrlimit(res, (value, value))
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))


# ------------------------------------------------------------------------------------- audit hooks


def _install_hooks(wd: str, hidden: tuple[str, ...], keep: str, *, strict: bool) -> None:
    """Second layer (the only one in hooks-only mode). PEP 578 hooks are not a security boundary
    against code that can reach native memory; ctypes & co are refused to make that harder.
    `strict` also refuses _posixsubprocess (so subprocess and asyncio): a binary it execs would run
    without our hooks, and in hooks-only mode nothing else would stop it."""
    imports = _DENIED_IMPORTS | {"_posixsubprocess"} if strict else _DENIED_IMPORTS
    write_flags = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
    dev_ok = frozenset({"/dev/null", "/dev/stdout", "/dev/stderr", "/dev/zero"})

    # Everything the hook needs is bound as a default, so rebinding module globals cannot change it;
    # nothing but the interpreter's hook list refers to it, and the gc walks that could find it are refused.
    def hook(event: str, args: tuple, *, _wd: str = wd.rstrip("/") + "/", _hidden: tuple = hidden,
             _keep: str = keep.rstrip("/") + "/",
             _denied: frozenset = _DENIED_EVENTS, _paths: frozenset = _PATH_EVENTS,
             _reads: frozenset = _READ_PATH_EVENTS, _imports: frozenset = imports,
             _dir_fd: frozenset = _DIR_FD_EVENTS,
             _wflags: int = write_flags, _dev_ok: frozenset = dev_ok, _os=os) -> None:
        if event in _denied or event.startswith("ctypes."):
            raise PermissionError(f"sandbox: {event} is not allowed")
        if event == "import":
            if args[0] in _imports:
                raise ImportError(f"sandbox: import of {args[0]!r} is not allowed")
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
                    base = _os.readlink(f"/proc/self/fd/{dir_fd}")
                else:
                    base = _os.getcwd()
                s = _os.path.join(base, s)
            return _os.path.realpath(s)

        def inside(real: str | None) -> bool:
            return real is None or real == _wd[:-1] or real.startswith(_wd)

        def is_hidden(real: str | None) -> bool:
            if real is None or real.startswith(_keep):
                return False
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


def _supervise(status_fd: int, init_pid: int) -> None:
    """Wait for init, then kill whatever it left behind. We are a child subreaper, so every orphan
    of the run (even one that called setsid) becomes our child instead of escaping to the host."""
    try:
        _, wstatus, _ = os.wait4(init_pid, 0)
    except ChildProcessError:
        wstatus = 0
    _sweep_children()
    _send(status_fd, event="init-exit", **_decode(wstatus))
    os._exit(0)


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


def _run_init(cfg: dict, setup: dict, code: str, status_fd: int, mem_r: int, mem_w: int) -> None:
    """Returns only in the user process; init itself ends with os._exit."""
    isolation = setup["isolation"]
    warnings: list[str] = []
    wd = cfg["workdir"]
    try:
        if isolation in ("root-ns", "user-ns"):
            _setup_mounts(cfg, isolation, setup["keep"], setup["keep_tree"], warnings)
        if setup["keep_tree"] is not None:
            os.close(setup["keep_tree"])
        os.chdir(wd)
        main_py = os.path.join(wd, "main.py")
        if isolation != "hooks-only":  # the tmpfs is empty: put the source back for tracebacks
            with open(main_py, "w", encoding="utf-8") as f:
                f.write(code)
        _set_rlimits(cfg)
        if isolation == "user-ns":
            _drop_capabilities()
        elif os.geteuid() == 0:
            if isolation == "root-ns" or _world_readable(setup["keep"]):
                if isolation == "root-ns":
                    os.chown(main_py, cfg["uid"], cfg["gid"])
                _become(cfg["uid"], cfg["gid"])
            else:
                warnings.append(f"still root: the stdlib under {setup['keep']} is not readable by other "
                                "users, so RLIMIT_NPROC and file permissions do not apply")
        resource.setrlimit(resource.RLIMIT_NPROC, (setup["nproc"], setup["nproc"]))
        _prctl(PR_SET_NO_NEW_PRIVS, 1)
        _prctl(PR_SET_DUMPABLE, 0)  # the code runs under the same uid; it must not ptrace or read us
        _prctl(PR_SET_PDEATHSIG, signal.SIGKILL)  # set after the uid change, which clears it
    except BaseException as e:  # noqa: BLE001 - any failure here must reach the runner, not a traceback
        _send(status_fd, event="error", message=f"sandbox setup failed: {type(e).__name__}: {e}")
        os._exit(EXIT_SETUP_FAILED)
    if warnings:
        _send(status_fd, event="warnings", warnings=warnings)
    user_pid = os.fork()
    if user_pid == 0:
        os.close(status_fd)
        os.close(mem_r)
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

    _prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    _prctl(PR_SET_DUMPABLE, 1)  # our own /proc/self stays ours; init is not dumpable
    for name in [m for m in sys.modules if m == "ctypes" or m.startswith(("ctypes.", "_ctypes"))]:
        del sys.modules[name]
    if cfg["audit_hooks"]:
        _install_hooks(cfg["workdir"], tuple(os.path.realpath(p) for p in cfg["hide_paths"]), setup["keep"],
                       strict=setup["isolation"] == "hooks-only")
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
        keep_tree: int | None = None
        if cfg["isolation"] in ("auto", "root-ns", "user-ns") and any(
            _keep_visible(keep, os.path.realpath(h)) for h in cfg["hide_paths"]
        ):
            try:
                keep_tree = _open_tree_clone(keep)
            except OSError:
                keep_tree = None  # init will leave that hide path visible and say so
        isolation, warnings, nproc = _isolate(cfg)
        if isolation == "hooks-only" and not cfg["audit_hooks"]:
            raise RuntimeError("no namespaces here and audit hooks are off: refusing to run unguarded")
    except BaseException as e:  # noqa: BLE001
        _send(status_fd, event="error", message=f"sandbox isolation failed: {type(e).__name__}: {e}")
        os._exit(EXIT_SETUP_FAILED)
    setup = {"isolation": isolation, "nproc": nproc, "keep": keep, "keep_tree": keep_tree}
    try:
        _prctl(PR_SET_CHILD_SUBREAPER, 1)
    except OSError as e:
        warnings.append(f"not a subreaper ({e}): orphans of the code may outlive the run")
    mem_r, mem_w = os.pipe()
    init_pid = os.fork()
    if init_pid == 0:
        _run_init(cfg, setup, code, status_fd, mem_r, mem_w)
        return cfg, setup, code, mem_w
    for fd in (mem_r, mem_w, keep_tree):
        if fd is not None:
            os.close(fd)
    _send(status_fd, event="started", pid=init_pid, isolation=isolation, warnings=warnings)
    _supervise(status_fd, init_pid)
    raise AssertionError("unreachable")


if __name__ == "__main__":
    _cfg, _setup, _code, _mem_w = main()
    _run_user(_cfg, _setup, _code, _mem_w)
