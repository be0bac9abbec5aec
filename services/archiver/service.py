"""The archiver: writes every trajectory from the TRAJECTORIES stream to disk, one JSON file per problem.

Writing `<archive_dir>/<problem_id>.json` atomically (temp file + rename) makes a redelivered trajectory
harmless: the same problem's file is simply written again with the same content.
"""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path

from google.protobuf import json_format
from prometheus_client import Counter
from pydantic import Field

from conclave.v1 import outcome_pb2
from services.bus import subjects, topology
from services.runtime.lifecycle import Runtime, Service
from services.runtime.logs import problem_id_var
from services.runtime.settings import RuntimeSettings
from services.runtime.worker import Rejected, WorkContext

log = logging.getLogger(__name__)


class ArchiverSettings(RuntimeSettings):
    archive_dir: Path = Field(Path(".state/archive"), description="where trajectory files are written")


def write_atomically(path: Path, data: bytes) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


class ArchiverService(Service[ArchiverSettings]):
    name = "archiver"
    description = "Archives every discussion trajectory for analysis and training."

    async def setup(self, rt: Runtime[ArchiverSettings]) -> None:
        self.settings.archive_dir.mkdir(parents=True, exist_ok=True)
        self._written = Counter("conclave_trajectories_archived", "Trajectories written to the archive.",
                                ["consensus", "format_ok"], registry=rt.registry)
        rt.add_worker(topology.ARCHIVER_CONSUMER, outcome_pb2.Trajectory, self.handle)

    async def handle(self, ctx: WorkContext, traj: outcome_pb2.Trajectory) -> None:
        pid = traj.problem.id or ctx.msg.subject.removeprefix(subjects.TRAJECTORIES_PREFIX + ".")
        problem_id_var.set(pid)
        if not subjects.valid_problem_id(pid):
            raise Rejected("invalid_trajectory", f"trajectory without a valid problem id: {pid!r}")
        body = json_format.MessageToJson(traj, preserving_proto_field_name=True, indent=None).encode()
        await asyncio.to_thread(write_atomically, self.settings.archive_dir / f"{pid}.json", body)
        self._written.labels(str(traj.consensus).lower(), str(traj.format_ok).lower()).inc()


def build(settings: ArchiverSettings | None = None) -> ArchiverService:
    return ArchiverService(settings or ArchiverSettings())
