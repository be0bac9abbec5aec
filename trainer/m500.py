"""The M500 selection: which archived discussions are worth fine-tuning on.

The paper kept a trajectory only if (1) the critics reached consensus within the allowed rounds,
(2) every message kept the required format, and (3) the final answer was correct. A trajectory that
was never graded (Result.correct = -1: no reference answer, or code whose grading tests were held back
from the team) cannot pass (3) unless grades from `conclave eval` are supplied (dataset.py --grades).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from conclave.v1 import outcome_pb2

# Why a trajectory was left out, in the order the checks run.
NOT_GRADED = "not_graded"
WRONG = "wrong_answer"
NO_CONSENSUS = "no_consensus"
FORMAT_BROKEN = "format_broken"
SINGLE_AGENT = "single_agent"
EMPTY = "no_messages"


def rejection(traj: outcome_pb2.Trajectory, skip: tuple[str, ...] = ()) -> str | None:
    """None when the trajectory is kept, else the first reason it is not (checks in `skip` are not run)."""
    if traj.problem.single_agent:
        return SINGLE_AGENT  # the paper's data is team discussions
    if not any(m.HasField("call") for m in traj.messages):
        return EMPTY
    if traj.result.correct < 0:
        return NOT_GRADED
    if traj.result.correct != 1:
        return WRONG
    if not traj.consensus and NO_CONSENSUS not in skip:
        return NO_CONSENSUS
    if not traj.format_ok and FORMAT_BROKEN not in skip:
        return FORMAT_BROKEN
    return None


@dataclass
class Selection:
    kept: list[outcome_pb2.Trajectory] = field(default_factory=list)
    rejected: Counter[str] = field(default_factory=Counter)

    @property
    def seen(self) -> int:
        return len(self.kept) + sum(self.rejected.values())

    def summary(self) -> str:
        why = ", ".join(f"{reason} {n}" for reason, n in self.rejected.most_common()) or "none"
        return f"kept {len(self.kept)} of {self.seen} trajectories; left out: {why}"


RELAXABLE = (NO_CONSENSUS, FORMAT_BROKEN)


def select(trajectories, allow: tuple[str, ...] = ()) -> Selection:
    """`allow` keeps trajectories that fail only the named RELAXABLE checks (leaving the paper's recipe)."""
    out = Selection()
    for traj in trajectories:
        reason = rejection(traj, skip=allow)
        if reason is None:
            out.kept.append(traj)
        else:
            out.rejected[reason] += 1
    return out
