"""Checkpoint bookkeeping: where checkpoints live, which is the latest complete one, where training
resumes, and which ones to delete. Pure Python; the tensors are saved by torch.distributed.checkpoint
(trainer/distributed.py) into the same directories.

  OUTPUT/checkpoints/step-00000040/   the model and optimizer shards (DCP's files, one set per rank)
  OUTPUT/checkpoints/step-00000040/trainer_state.json   written last, by rank 0, once every rank saved

A directory without trainer_state.json is a save that did not finish (a killed pod): it is ignored
and removed at the next save. Resuming checks that the data and recipe match, since the step count
says where in the epoch order training stands only for the same samples.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

STATE_FILE = "trainer_state.json"
_NAME = re.compile(r"^step-(\d{8})$")


class ResumeError(ValueError):
    """A checkpoint that cannot continue this run (other data, another recipe); the message says which."""


@dataclass(frozen=True)
class TrainerState:
    step: int  # optimizer steps done
    epoch: int  # the epoch in progress (0-based): steps_per_epoch * epoch + step_in_epoch == step
    step_in_epoch: int
    total_steps: int
    world_size: int
    data_fingerprint: str
    trained_tokens: int
    elapsed_s: float

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)

    @classmethod
    def from_json(cls, text: str) -> TrainerState:
        return cls(**json.loads(text))


def position(step: int, steps_per_epoch: int) -> tuple[int, int]:
    """(epoch, step within it) after `step` optimizer steps."""
    return divmod(step, steps_per_epoch)


def fingerprint(rows: Iterable[tuple[str, int, int]], recipe: dict[str, object]) -> str:
    """A hash of the samples ((problem id, seq, token count) in data order) and of the settings that
    decide the order and the steps: resuming with other data or batches would skip or repeat samples."""
    h = hashlib.sha256(json.dumps(recipe, sort_keys=True, default=str).encode())
    for problem_id, seq, n in rows:
        h.update(f"{problem_id}\x00{seq}\x00{n}\n".encode())
    return h.hexdigest()[:16]


@dataclass(frozen=True)
class Checkpoints:
    root: Path  # OUTPUT/checkpoints

    def path(self, step: int) -> Path:
        return self.root / f"step-{step:08d}"

    def _dirs(self) -> list[tuple[int, Path]]:
        if not self.root.is_dir():
            return []
        found = [(int(m.group(1)), p) for p in self.root.iterdir() if p.is_dir() and (m := _NAME.match(p.name))]
        return sorted(found)

    def complete(self) -> list[tuple[int, Path]]:
        return [(step, p) for step, p in self._dirs() if (p / STATE_FILE).is_file()]

    def latest(self) -> tuple[TrainerState, Path] | None:
        done = self.complete()
        if not done:
            return None
        path = done[-1][1]
        return TrainerState.from_json((path / STATE_FILE).read_text(encoding="utf-8")), path

    def mark_complete(self, state: TrainerState) -> Path:
        """Called by rank 0 after every rank has saved its shards: from now on the checkpoint counts."""
        path = self.path(state.step)
        tmp = path / (STATE_FILE + ".tmp")
        tmp.write_text(state.to_json(), encoding="utf-8")
        tmp.replace(path / STATE_FILE)
        return path

    def stale(self, keep: int) -> list[Path]:
        """What to delete after a save: complete checkpoints beyond the newest `keep`, and unfinished ones
        older than the newest complete one (a newer unfinished one may be a save in progress)."""
        done = self.complete()
        newest = done[-1][0] if done else -1
        old = [p for _, p in done[:-keep]] if keep > 0 else []
        unfinished = [p for step, p in self._dirs() if not (p / STATE_FILE).is_file() and step < newest]
        return old + unfinished

    def prune(self, keep: int) -> list[Path]:
        gone = self.stale(keep)
        for p in gone:
            shutil.rmtree(p, ignore_errors=True)
        return gone


def check_fresh_start(ckpts: Checkpoints, will_save: bool) -> None:
    """A run that does not --resume must not write its checkpoints among an earlier run's: a later
    --resume would take whichever is newest."""
    done = ckpts.complete()
    if will_save and done:
        raise ResumeError(f"{ckpts.root} holds checkpoints of an earlier run (up to step {done[-1][0]}): pass "
                          "--resume to continue it, or remove them, or give another --output")


def check_resumable(state: TrainerState, data_fingerprint: str, world_size: int) -> list[str]:
    """Raises ResumeError when the checkpoint belongs to other data or another recipe; returns warnings."""
    if state.data_fingerprint != data_fingerprint:
        raise ResumeError(f"checkpoint at step {state.step} was trained on other data or settings (fingerprint "
                          f"{state.data_fingerprint}, now {data_fingerprint}): use the same --data/--archive, "
                          "--seed, --seq-len and --global-batch, or another --output")
    warnings = []
    if state.world_size != world_size:
        warnings.append(f"checkpoint saved by {state.world_size} ranks, resuming on {world_size}: the weights "
                        "and optimizer reshard, but the rest of this epoch's samples are split anew (some may "
                        "repeat or be skipped until the epoch ends)")
    return warnings


def trim_metrics(path: Path, step: int) -> int:
    """Keeps metrics.jsonl rows up to `step` (the checkpoint resumed from); returns how many were kept."""
    if not path.is_file():
        path.write_text("", encoding="utf-8")
        return 0
    kept = [line for line in path.read_text(encoding="utf-8").splitlines()
            if line.strip() and json.loads(line).get("step", 0) <= step]
    path.write_text("".join(line + "\n" for line in kept), encoding="utf-8")
    return len(kept)
