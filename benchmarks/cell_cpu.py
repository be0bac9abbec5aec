"""Where the CPU went during one measured cell of a benchmark: cores (CPU seconds over the cell's wall seconds)
per role, a role being the process trees of named root processes (the gateway and the workers it starts, a
pool of load generators), every other process under its command name (vLLM's API server and engine core, when
the pod runs on this host).

The busiest single process of each role is reported too: a role at 1.4 cores whose busiest process is at 1.0
has one saturated process (a gateway worker that takes more than its share of the connections, or one Python
event loop that can do no more), which the role's total alone would hide.
"""

from __future__ import annotations

import contextlib
import os
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path
from typing import Any

# pid -> (parent pid, command name, user + system CPU in clock ticks so far)
Snapshot = dict[int, tuple[int, str, int]]


def snapshot() -> Snapshot:
    """Every process on the host (Linux /proc)."""
    out: Snapshot = {}
    for d in Path("/proc").glob("[0-9]*"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            stat = (d / "stat").read_text()
            after = stat[stat.rindex(")") + 2:].split()  # state ppid pgrp session tty tpgid flags 4 faults utime stime
            out[int(d.name)] = (int(after[1]), stat[stat.index("(") + 1:stat.rindex(")")], int(after[11]) + int(after[12]))
    return out


class CellCpu:
    def __init__(self) -> None:
        self.roots: dict[str, list[int]] = {}

    def watch(self, role: str, pids: Iterable[int]) -> None:
        """`pids` and every process below them count as `role`."""
        self.roots[role] = list(pids)

    def cores(self, before: Snapshot, after: Snapshot, wall_s: float) -> dict[str, float]:
        """Cores per role between two snapshots (a process started between them counts from zero; one that
        ended is missing from `after` and uncounted), and `<role>_busiest` for each watched role, after the
        roles."""
        hz = os.sysconf("SC_CLK_TCK")
        children: dict[int, list[int]] = defaultdict(list)
        for pid, (ppid, _, _) in after.items():
            children[ppid].append(pid)
        role_of: dict[int, str] = {}
        for role, roots in self.roots.items():
            todo = list(roots)
            while todo:
                pid = todo.pop()
                if pid not in role_of:
                    role_of[pid] = role
                    todo += children.get(pid, [])
        used: dict[str, float] = defaultdict(float)
        busiest: dict[str, float] = defaultdict(float)
        for pid, (ppid, comm, ticks) in after.items():
            # A kernel worker renames itself by the work it does (kworker/0:1-events): one line for them all.
            role = role_of.get(pid) or ("kernel threads" if ppid == 2 or pid == 2 else comm)
            spent = (ticks - before.get(pid, (0, "", 0))[2]) / hz / max(wall_s, 1e-9)
            used[role] += spent
            busiest[role] = max(busiest[role], spent)
        out = {role: round(used[role], 2) for role in self.roots}
        out.update({role: round(c, 2) for role, c in sorted(used.items(), key=lambda kv: -kv[1])
                    if c >= 0.05 and role not in self.roots})
        out.update({f"{role}_busiest": round(busiest[role], 2) for role in self.roots})
        return out


def mean_cores(cells: list[dict[str, Any]]) -> dict[str, float]:
    """The wall-weighted mean of several cells' `cores` (each cell a dict with `wall_s` and `cores`)."""
    wall = sum(c["wall_s"] for c in cells) or 1e-9
    roles = list(dict.fromkeys(r for c in cells for r in c["cores"]))  # in the order the cells give them
    return {r: round(sum(c["cores"].get(r, 0.0) * c["wall_s"] for c in cells) / wall, 2) for r in roles}
