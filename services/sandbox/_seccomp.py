"""The sandbox's own seccomp filter (classic BPF, built here: no libseccomp in the stdlib).

Installed in the process that runs the code, on top of whatever the container runtime applies. A
deny list, not an allow list: the interpreter's needs vary by version and libc; what matters is that
nothing that reaches outside the run, loads new native code or changes the kernel's view is left.
"""

from __future__ import annotations

import errno
import struct

import _syscalls as sc  # a sibling: the child runs these without the package

# Refused in every mode: other processes' memory, new namespaces and mounts, kernel objects, and
# anonymous code (memfd_create would give an executable file that no mount's noexec covers).
_ALWAYS = (
    "ptrace", "process_vm_readv", "process_vm_writev", "pidfd_getfd", "kcmp", "memfd_create", "memfd_secret",
    "userfaultfd", "perf_event_open", "bpf", "keyctl", "add_key", "request_key", "io_uring_setup",
    "io_uring_enter", "io_uring_register", "unshare", "setns", "mount", "umount2", "pivot_root", "chroot",
    "open_tree", "move_mount", "fsopen", "fsconfig", "fsmount", "fspick", "mount_setattr", "kexec_load",
    "kexec_file_load", "init_module", "finit_module", "delete_module", "reboot", "swapon", "swapoff", "acct",
    "quotactl", "name_to_handle_at", "open_by_handle_at", "syslog", "uselib", "vhangup", "iopl", "ioperm",
    "modify_ldt", "lookup_dcookie", "execve", "execveat",
    # READ_IMPLIES_EXEC would turn every readable mapping executable behind the mmap check below.
    "personality",
)
# Without namespaces there is no pid namespace or net namespace to contain these.
_WEAK_ONLY = ("fork", "vfork", "tkill", "pidfd_open", "pidfd_send_signal")

# BPF opcodes
_LD_W_ABS = 0x20
_JEQ = 0x15
_JSET = 0x45
_JGE = 0x35
_RET = 0x06
_RET_ALLOW = 0x7FFF0000
_RET_KILL_PROCESS = 0x80000000
_RET_ERRNO = 0x00050000
_OFF_NR, _OFF_ARCH = 0, 4
_PROT_EXEC = 0x4
_MAP_ANONYMOUS = 0x20
_AF_UNIX = 1
_X32_BIT = 0x40000000


def _arg(i: int) -> int:
    return 16 + 8 * i  # low 32 bits of args[i] (little-endian; every arch we know numbers for)


def _ins(code: int, k: int, jt: int = 0, jf: int = 0) -> bytes:
    return struct.pack("<HBBI", code, jt, jf, k & 0xFFFFFFFF)


def build(*, weak: bool, pid: int) -> bytes | None:
    """The filter for one run; None where this architecture's numbers are unknown.
    `weak` (no namespaces): also no sockets at all, no processes but threads, and signals only to `pid`."""
    nr = sc.syscall_numbers()
    if nr is None or sc.AUDIT_ARCH is None:
        return None
    eperm = _RET_ERRNO | errno.EPERM
    load_nr = _ins(_LD_W_ABS, _OFF_NR)
    prog = [_ins(_LD_W_ABS, _OFF_ARCH), _ins(_JEQ, sc.AUDIT_ARCH, 1, 0), _ins(_RET, _RET_KILL_PROCESS), load_nr]
    if sc.ARCH == "x86_64":  # the x32 ABI reuses the same arch value with this bit set
        prog += [_ins(_JGE, _X32_BIT, 0, 1), _ins(_RET, _RET_KILL_PROCESS)]

    def deny(name: str, ret: int = eperm) -> None:
        if name in nr:
            prog.extend([_ins(_JEQ, nr[name], 0, 1), _ins(_RET, ret)])

    def when(name: str, body: list[bytes]) -> None:
        """Run `body` (which must end by reloading the syscall number) only for syscall `name`."""
        if name in nr:
            prog.append(_ins(_JEQ, nr[name], 0, len(body)))
            prog.extend(body)

    for name in _ALWAYS + (_WEAK_ONLY if weak else ()):
        deny(name)
    deny("clone3", _RET_ERRNO | errno.ENOSYS)  # flags sit behind a pointer: make libc fall back to clone
    # No new executable memory except file mappings (the stdlib's extension modules): the only files the
    # code can write live on a noexec tmpfs in the namespace modes.
    # Not on aarch64: its loader mprotects code segments PROT_EXEC|PROT_BTI when the CPU has BTI.
    for name in ("mprotect", "pkey_mprotect") if sc.ARCH == "x86_64" else ():
        when(name, [_ins(_LD_W_ABS, _arg(2)), _ins(_JSET, _PROT_EXEC, 0, 1), _ins(_RET, eperm), load_nr])
    when("mmap", [_ins(_LD_W_ABS, _arg(2)), _ins(_JSET, _PROT_EXEC, 0, 3), _ins(_LD_W_ABS, _arg(3)),
                  _ins(_JSET, _MAP_ANONYMOUS, 0, 1), _ins(_RET, eperm), load_nr])
    if weak:
        deny("socket", _RET_ERRNO | errno.EACCES)
        # Threads only: a thread has CLONE_THREAD, fork() does not.
        when("clone", [_ins(_LD_W_ABS, _arg(0)), _ins(_JSET, sc.CLONE_THREAD, 1, 0), _ins(_RET, eperm), load_nr])
        for name in ("kill", "tgkill", "rt_sigqueueinfo", "rt_tgsigqueueinfo"):  # arg 0: the target process
            when(name, [_ins(_LD_W_ABS, _arg(0)), _ins(_JEQ, pid, 1, 0), _ins(_RET, eperm), load_nr])
    else:
        # The net namespace has no interfaces; unix sockets stay for socketpair-like local use.
        when("socket", [_ins(_LD_W_ABS, _arg(0)), _ins(_JEQ, _AF_UNIX, 1, 0),
                        _ins(_RET, _RET_ERRNO | errno.EAFNOSUPPORT), load_nr])
        when("clone", [_ins(_LD_W_ABS, _arg(0)), _ins(_JSET, sc.CLONE_NEW_ANY, 0, 1), _ins(_RET, eperm), load_nr])
    prog.append(_ins(_RET, _RET_ALLOW))
    return b"".join(prog)


def install(*, weak: bool, pid: int) -> bool:
    """Load the filter into this process (and everything it starts). False where it cannot be built."""
    program = build(weak=weak, pid=pid)
    if program is None:
        return False
    sc.install_filter(program)
    return True
