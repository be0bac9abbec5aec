"""Landlock (Linux 5.13+, unprivileged) for the weak mode: without a mount namespace to build a root in,
the kernel still limits which files the code may touch. Read: the stdlib, the linked libraries, the
loader cache, its own /proc entry. Write: the working dir only. Signals and abstract unix sockets stay
inside the run where the kernel scopes them (ABI 6+)."""

from __future__ import annotations

import ctypes
import os
import struct

import _syscalls as sc  # a sibling: the child runs these without the package

_CREATE_RULESET, _ADD_RULE, _RESTRICT_SELF = 444, 445, 446  # the unified syscall table
_CREATE_RULESET_VERSION = 1
_RULE_PATH_BENEATH = 1

EXECUTE, WRITE_FILE, READ_FILE, READ_DIR = 1, 2, 4, 8
REMOVE_DIR, REMOVE_FILE, MAKE_CHAR, MAKE_DIR, MAKE_REG, MAKE_SOCK, MAKE_FIFO, MAKE_BLOCK, MAKE_SYM = (
    16, 32, 64, 128, 256, 512, 1024, 2048, 4096)
REFER, TRUNCATE, IOCTL_DEV = 8192, 16384, 32768
_FILE_RIGHTS = EXECUTE | WRITE_FILE | READ_FILE | TRUNCATE | IOCTL_DEV
_SCOPE_ABSTRACT_UNIX_SOCKET, _SCOPE_SIGNAL = 1, 2

_LIBC = ctypes.CDLL(None, use_errno=True)


def abi() -> int:
    """Landlock ABI version of this kernel; 0 where it is missing, disabled or refused by seccomp."""
    version = _LIBC.syscall(ctypes.c_long(_CREATE_RULESET), None, ctypes.c_size_t(0),
                            ctypes.c_uint32(_CREATE_RULESET_VERSION))
    return max(int(version), 0)


def _handled(version: int) -> int:
    rights = (1 << 13) - 1  # ABI 1: EXECUTE .. MAKE_SYM
    if version >= 2:
        rights |= REFER
    if version >= 3:
        rights |= TRUNCATE
    if version >= 5:
        rights |= IOCTL_DEV
    return rights


def restrict(*, read: list[str], write: list[str], devices: list[str]) -> int:
    """Restrict this process (and what it starts) for good. Returns the ABI used; 0 if unavailable."""
    version = abi()
    if version == 0:
        return 0
    handled = _handled(version)
    if version >= 6:
        attr = struct.pack("<QQQ", handled, 0, _SCOPE_ABSTRACT_UNIX_SOCKET | _SCOPE_SIGNAL)
    elif version >= 4:
        attr = struct.pack("<QQ", handled, 0)
    else:
        attr = struct.pack("<Q", handled)
    ruleset = _LIBC.syscall(ctypes.c_long(_CREATE_RULESET), attr, ctypes.c_size_t(len(attr)), ctypes.c_uint32(0))
    if ruleset < 0:
        sc.check(-1, "landlock_create_ruleset")
    try:
        grants = [(p, READ_FILE | READ_DIR | EXECUTE) for p in read]
        grants += [(p, READ_FILE | WRITE_FILE) for p in devices]
        grants += [(p, handled & ~(EXECUTE | MAKE_CHAR | MAKE_BLOCK | MAKE_SOCK | MAKE_FIFO | IOCTL_DEV))
                   for p in write]
        for path, rights in grants:
            try:
                fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
            except OSError:
                continue  # not on this host
            try:
                if not os.path.isdir(f"/proc/self/fd/{fd}"):
                    rights &= _FILE_RIGHTS
                rule = struct.pack("<Qi", rights & handled, fd)  # struct landlock_path_beneath_attr, packed
                sc.check(_LIBC.syscall(ctypes.c_long(_ADD_RULE), ctypes.c_int(ruleset),
                                       ctypes.c_int(_RULE_PATH_BENEATH), rule, ctypes.c_uint32(0)),
                         f"landlock_add_rule {path}")
            finally:
                os.close(fd)
        sc.check(_LIBC.syscall(ctypes.c_long(_RESTRICT_SELF), ctypes.c_int(ruleset), ctypes.c_uint32(0)),
                 "landlock_restrict_self")
    finally:
        os.close(ruleset)
    return version
