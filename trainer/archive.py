"""Reads the trajectories the archiver wrote: one JSON file per problem (services/archiver/)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from google.protobuf import json_format

from conclave.v1 import outcome_pb2

log = logging.getLogger(__name__)


class ArchiveError(ValueError):
    pass


@dataclass
class ArchiveReader:
    """Iterates an archive directory in file-name order; unreadable files are counted and named, not fatal."""

    directory: Path
    unreadable: list[str] = field(default_factory=list)

    def __iter__(self) -> Iterator[outcome_pb2.Trajectory]:
        if not self.directory.is_dir():
            raise ArchiveError(f"{self.directory} is not a directory: point at the archiver's archive_dir")
        for path in sorted(self.directory.glob("*.json")):
            traj = outcome_pb2.Trajectory()
            try:
                json_format.Parse(path.read_text(encoding="utf-8"), traj, ignore_unknown_fields=True)
            except (json_format.ParseError, UnicodeDecodeError, OSError) as exc:
                log.warning("skipping unreadable trajectory %s: %s", path.name, exc)
                self.unreadable.append(path.name)
                continue
            yield traj
