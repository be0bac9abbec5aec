"""Thin libc/syscall wrappers for the sandbox child (stdlib only; imported by _bootstrap.py, never by the
service). Numbers per architecture for the calls glibc has no wrapper for."""

from __future__ import annotations

import ctypes
import os

CLONE_NEWNS = 0x00020000
CLONE_NEWCGROUP = 0x02000000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000
CLONE_THREAD = 0x00010000
CLONE_NEW_ANY = (CLONE_NEWNS | CLONE_NEWCGROUP | CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWUSER | CLONE_NEWPID
                 | CLONE_NEWNET)

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
# statvfs() reports the per-mount flags with the same values as MS_*: in a user namespace a bind remount
# must repeat the ones that are locked, or the kernel refuses it.
LOCKED_MOUNT_FLAGS = MS_NOSUID | MS_NODEV | MS_NOEXEC | MS_NOATIME | MS_NODIRATIME | MS_RELATIME
MNT_DETACH = 2

PR_SET_PDEATHSIG = 1
PR_SET_DUMPABLE = 4
PR_SET_SECCOMP = 22
PR_CAPBSET_DROP = 24
PR_SET_SECUREBITS = 28
PR_SET_CHILD_SUBREAPER = 36
PR_SET_NO_NEW_PRIVS = 38
SECBIT_NOROOT_AND_LOCK = 0x3
SECCOMP_MODE_FILTER = 2

ARCH = os.uname().machine
# The calls below that glibc does not wrap (pivot_root), or that the seccomp filter names.
_NUMBERS: dict[str, dict[str, int]] = {
    "x86_64": {
        "mmap": 9, "mprotect": 10, "socket": 41, "clone": 56, "fork": 57, "vfork": 58, "execve": 59,
        "kill": 62, "ptrace": 101, "syslog": 103, "rt_sigqueueinfo": 129, "uselib": 134, "personality": 135,
        "vhangup": 153, "modify_ldt": 154, "pivot_root": 155, "chroot": 161, "acct": 163, "mount": 165,
        "umount2": 166, "swapon": 167, "swapoff": 168, "reboot": 169, "iopl": 172, "ioperm": 173,
        "init_module": 175, "delete_module": 176, "quotactl": 179, "tkill": 200, "lookup_dcookie": 212,
        "tgkill": 234, "kexec_load": 246, "add_key": 248, "request_key": 249, "keyctl": 250, "unshare": 272,
        "rt_tgsigqueueinfo": 297, "perf_event_open": 298, "name_to_handle_at": 303, "open_by_handle_at": 304,
        "setns": 308, "process_vm_readv": 310, "process_vm_writev": 311, "kcmp": 312, "finit_module": 313,
        "memfd_create": 319, "kexec_file_load": 320, "bpf": 321, "execveat": 322, "userfaultfd": 323,
        "pkey_mprotect": 329,
    },
    "aarch64": {
        "mmap": 222, "mprotect": 226, "socket": 198, "clone": 220, "execve": 221, "kill": 129, "ptrace": 117,
        "syslog": 116, "rt_sigqueueinfo": 138, "personality": 92, "vhangup": 58, "pivot_root": 41,
        "chroot": 51, "acct": 89, "mount": 40, "umount2": 39, "swapon": 224, "swapoff": 225, "reboot": 142,
        "init_module": 105, "delete_module": 106, "quotactl": 60, "tkill": 130, "lookup_dcookie": 18,
        "tgkill": 131, "kexec_load": 104, "add_key": 217, "request_key": 218, "keyctl": 219, "unshare": 97,
        "rt_tgsigqueueinfo": 240, "perf_event_open": 241, "name_to_handle_at": 264, "open_by_handle_at": 265,
        "setns": 268, "process_vm_readv": 270, "process_vm_writev": 271, "kcmp": 272, "finit_module": 273,
        "memfd_create": 279, "kexec_file_load": 294, "bpf": 280, "execveat": 281, "userfaultfd": 282,
        "pkey_mprotect": 288,
    },
}
# The newer calls have one number on every architecture (the unified table).
_UNIFIED = {"pidfd_send_signal": 424, "io_uring_setup": 425, "io_uring_enter": 426, "io_uring_register": 427,
            "open_tree": 428, "move_mount": 429, "fsopen": 430, "fsconfig": 431, "fsmount": 432, "fspick": 433,
            "pidfd_open": 434, "clone3": 435, "pidfd_getfd": 438, "mount_setattr": 442, "memfd_secret": 447}
AUDIT_ARCH = {"x86_64": 0xC000003E, "aarch64": 0xC00000B7}.get(ARCH)


def syscall_numbers() -> dict[str, int] | None:
    """Name -> number on this architecture; None where we do not know it (no seccomp filter then)."""
    table = _NUMBERS.get(ARCH)
    return None if table is None else {**table, **_UNIFIED}


_LIBC = ctypes.CDLL(None, use_errno=True)


def check(ret: int, what: str) -> None:
    if ret != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def unshare(flags: int) -> None:
    check(_LIBC.unshare(flags), "unshare")


def prctl(option: int, arg: int, arg3: int | ctypes.c_void_p = 0) -> None:
    check(_LIBC.prctl(option, ctypes.c_ulong(arg), arg3, ctypes.c_ulong(0), ctypes.c_ulong(0)),
          f"prctl({option})")


def mount(source: str | None, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    enc = (lambda s: None if s is None else s.encode())  # noqa: E731
    check(_LIBC.mount(enc(source), enc(target), enc(fstype), ctypes.c_ulong(flags), enc(data)),
          f"mount {target}")


def umount_detach(target: str) -> None:
    check(_LIBC.umount2(target.encode(), MNT_DETACH), f"umount {target}")


def pivot_root(new_root: str, put_old: str) -> None:
    numbers = syscall_numbers()
    if numbers is None:
        raise OSError(0, f"pivot_root: syscall number unknown on {ARCH}")
    check(_LIBC.syscall(ctypes.c_long(numbers["pivot_root"]), new_root.encode(), put_old.encode()), "pivot_root")


def open_tree_clone(path: str) -> int:
    """A detached copy of the mount at `path` (new mount API, 5.2+): it can be attached in another mount
    namespace, where a plain bind of `path` would need the right to walk its parents."""
    fd = _LIBC.syscall(ctypes.c_long(_UNIFIED["open_tree"]), ctypes.c_int(-100), path.encode(),
                       ctypes.c_uint(0x1 | 0x80000 | 0x8000))  # OPEN_TREE_CLONE | O_CLOEXEC | AT_RECURSIVE
    if fd < 0:
        check(-1, f"open_tree {path}")
    return int(fd)


def move_mount(tree_fd: int, target: str) -> None:
    check(_LIBC.syscall(ctypes.c_long(_UNIFIED["move_mount"]), ctypes.c_int(tree_fd), b"", ctypes.c_int(-100),
                        target.encode(), ctypes.c_uint(0x4)), f"move_mount {target}")  # MOVE_MOUNT_F_EMPTY_PATH


def drop_capabilities() -> None:
    """In a user namespace we hold every capability in it; give them all up for good."""
    cap = 0
    while _LIBC.prctl(PR_CAPBSET_DROP, ctypes.c_ulong(cap), 0, 0, 0) == 0:
        cap += 1  # EINVAL past the last capability this kernel knows
    prctl(PR_SET_SECUREBITS, SECBIT_NOROOT_AND_LOCK)

    class Header(ctypes.Structure):
        _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]

    class Data(ctypes.Structure):
        _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32),
                    ("inheritable", ctypes.c_uint32)]

    header = Header(0x20080522, 0)  # _LINUX_CAPABILITY_VERSION_3
    data = (Data * 2)()
    check(_LIBC.capset(ctypes.byref(header), data), "capset")


def install_filter(program: bytes) -> None:
    """Load a classic-BPF seccomp program (packed struct sock_filter[]); needs NO_NEW_PRIVS."""

    class Fprog(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]

    buf = ctypes.create_string_buffer(program, len(program))
    prog = Fprog(len(program) // 8, ctypes.cast(buf, ctypes.c_void_p))
    check(_LIBC.prctl(PR_SET_SECCOMP, ctypes.c_ulong(SECCOMP_MODE_FILTER), ctypes.byref(prog),
                      ctypes.c_ulong(0), ctypes.c_ulong(0)), "seccomp")
