"""Progress for long batch commands: a live bar on a terminal, one line per item everywhere else.

A rich bar draws nothing until it exits when stdout is not a terminal, so a `conclave eval` running
under nohup, in CI or in a Kubernetes Job would show no progress at all; there we print lines instead.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import IO, Protocol


class Progress(Protocol):
    def update(self, done: int, total: int, note: str = "") -> None: ...


@dataclass
class LineProgress:
    """Writes `label: done/total (pct) elapsed note` for every update."""

    label: str
    stream: IO[str] = field(default_factory=lambda: sys.stdout)
    started: float = field(default_factory=time.monotonic)

    def update(self, done: int, total: int, note: str = "") -> None:
        elapsed = int(time.monotonic() - self.started)
        pct = f"{done / total:.0%}" if total else "-"
        tail = f" {note}" if note else ""
        print(f"{self.label}: {done}/{total} ({pct}) {elapsed // 60}m{elapsed % 60:02d}s{tail}",
              file=self.stream, flush=True)


@dataclass
class BarProgress:
    bar: object
    task: object

    def update(self, done: int, total: int, note: str = "") -> None:
        self.bar.update(self.task, completed=done, total=total, note=note)  # type: ignore[attr-defined]


@contextmanager
def progress(label: str, total: int, done: int = 0, *, stream: IO[str] | None = None) -> Iterator[Progress]:
    """A progress view for `total` items of which `done` are already finished."""
    out = stream or sys.stdout
    if not out.isatty():
        view = LineProgress(label, out)
        view.update(done, total, "starting")
        yield view
        return
    from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn
    from rich.progress import Progress as RichProgress

    with RichProgress(TextColumn(f"[bold]{label}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                      TextColumn("{task.fields[note]}")) as bar:
        yield BarProgress(bar, bar.add_task(label, total=total, completed=done, note=""))
