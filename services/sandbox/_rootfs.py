"""The minimal root the code runs in (namespace modes): pivot_root into a fresh tmpfs that holds only

    the stdlib dirs of sys.path (read-only; any site-packages/dist-packages inside covered by an empty dir)
    the shared libraries the interpreter and its extension modules link (read-only, one file each)
    /etc/ld.so.cache, /dev/{null,zero,random,urandom}, a /proc of the run's own pid namespace (if allowed)
    the working dir: a private tmpfs of disk_mb, noexec (a written .so cannot be mapped executable)

and the old root detached, so nothing else of the host (project, home dirs, tokens, other runs) exists.
"""

from __future__ import annotations

import glob
import os
import sys

import _syscalls as sc

_DEVICES = ("/dev/null", "/dev/zero", "/dev/random", "/dev/urandom")
_PACKAGE_DIRS = ("site-packages", "dist-packages")


def stdlib_dirs() -> list[str]:
    """Where this interpreter imports from; started with -I -S, that is the stdlib and lib-dynload only."""
    return [os.path.realpath(p) for p in dict.fromkeys(sys.path) if p and os.path.isdir(p)]


def _mkdirs_in(root: str, path: str) -> str:
    target = root + path
    os.makedirs(target, mode=0o755, exist_ok=True)
    return target


def sources(cfg: dict) -> list[str]:
    return [*cfg["stdlib_dirs"], *cfg["library_files"], "/etc/ld.so.cache", *_DEVICES]


def _reachable_by_others(path: str) -> bool:
    parent = os.path.dirname(path)
    while parent != "/":
        try:
            if not os.stat(parent).st_mode & 0o001:
                return False
        except OSError:
            return False
        parent = os.path.dirname(parent)
    return True


def detach_unreachable(cfg: dict) -> dict[str, int]:
    """Supervisor side, as root before the uid drop of user-ns mode: detached copies (open_tree) of the
    sources the dropped uid could not reach through their parents (a stdlib under /root/.pyenv)."""
    trees: dict[str, int] = {}
    for path in sources(cfg):
        if os.path.exists(path) and not _reachable_by_others(path):
            try:
                trees[path] = sc.open_tree_clone(path)
            except OSError:
                continue  # a plain bind will say why it fails
    return trees


def _bind_readonly(path: str, root: str, trees: dict[str, int], warnings: list[str]) -> None:
    """Bind `path` (file or dir) at the same path inside `root`, read-only, keeping its locked flags."""
    try:
        if os.path.isdir(path) or (path in trees and os.path.isdir(f"/proc/self/fd/{trees[path]}")):
            target = _mkdirs_in(root, path)
        else:
            _mkdirs_in(root, os.path.dirname(path))
            target = root + path
            if not os.path.exists(target):
                os.close(os.open(target, os.O_WRONLY | os.O_CREAT, 0o644))
        if path in trees:
            sc.move_mount(trees.pop(path), target)
        else:
            sc.mount(path, target, None, sc.MS_BIND | sc.MS_REC)
        locked = os.statvfs(target).f_flag & sc.LOCKED_MOUNT_FLAGS
        sc.mount(None, target, None, sc.MS_BIND | sc.MS_REMOUNT | sc.MS_RDONLY | sc.MS_NOSUID | locked)
    except OSError as e:
        warnings.append(f"could not expose {path} in the sandbox root: {e}")


def build(cfg: dict, trees: dict[str, int], owner: tuple[int, int], warnings: list[str]) -> None:
    """Init side, in a fresh mount namespace: build the root at the host's workdir path and enter it.
    `trees`: detach_unreachable() of the supervisor."""
    wd = cfg["workdir"]
    root = wd  # any empty host dir works as the mount point; the workdir exists and is ours
    sc.mount(None, "/", None, sc.MS_REC | sc.MS_PRIVATE)
    sc.mount("tmpfs", root, "tmpfs", sc.MS_NOSUID | sc.MS_NODEV, "size=1m,nr_inodes=4096,mode=0755")
    stdlib = cfg["stdlib_dirs"]
    for path in stdlib:
        _bind_readonly(path, root, trees, warnings)
        for sub in _PACKAGE_DIRS:  # the base interpreter's own packages (cffi & co) are not the stdlib
            inner = root + os.path.join(path, sub)
            if os.path.isdir(inner):
                sc.mount("tmpfs", inner, "tmpfs", sc.MS_RDONLY | sc.MS_NOSUID | sc.MS_NODEV | sc.MS_NOEXEC,
                         "size=4k,nr_inodes=1,mode=0555")
    for path in sources(cfg)[len(stdlib):]:
        if not os.path.exists(path) and path not in trees:
            continue
        _bind_readonly(path, root, trees, warnings)
        if path in cfg["library_files"] and os.path.isdir(path):  # no ldd: a whole library dir, minus any Python packages in it
            for sub in _PACKAGE_DIRS:
                for inner in glob.glob(f"{root}{path}/python3*/{sub}"):
                    sc.mount("tmpfs", inner, "tmpfs", sc.MS_RDONLY | sc.MS_NOSUID | sc.MS_NODEV | sc.MS_NOEXEC,
                             "size=4k,nr_inodes=1,mode=0555")
    try:  # a proc of the new pid namespace; where the runtime masks /proc (Kubernetes) there is none
        sc.mount("proc", _mkdirs_in(root, "/proc"), "proc", sc.MS_NOSUID | sc.MS_NODEV | sc.MS_NOEXEC)
    except OSError as e:
        warnings.append(f"no /proc in the sandbox ({e}); the code sees no processes at all")
    _mkdirs_in(root, "/tmp")
    sc.mount("tmpfs", _mkdirs_in(root, wd), "tmpfs", sc.MS_NOSUID | sc.MS_NODEV | sc.MS_NOEXEC,
             f"size={cfg['disk_mb']}m,nr_inodes=4096,mode=0700,uid={owner[0]},gid={owner[1]}")
    for fd in trees.values():
        os.close(fd)
    os.chdir(root)
    sc.pivot_root(".", ".")  # the old root is stacked under the new one at "/" ...
    sc.umount_detach(".")  # ... and detached here, with everything of the host under it
    os.chdir("/")
    locked = os.statvfs("/").f_flag & sc.LOCKED_MOUNT_FLAGS
    sc.mount(None, "/", None, sc.MS_BIND | sc.MS_REMOUNT | sc.MS_RDONLY | sc.MS_NOSUID | sc.MS_NODEV | locked)
