"""The order samples are trained in: problems shuffled, each problem's samples together and in the
order they were generated (the paper keeps a discussion's messages in sequence)."""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Protocol


class HasProblem(Protocol):
    problem_id: str
    seq: int


def epoch_order(samples: Sequence[HasProblem], epoch: int, seed: int = 0) -> list[int]:
    """Indices into `samples` for one epoch; a different problem order every epoch, the same for a seed."""
    groups: dict[str, list[int]] = {}
    for i, s in enumerate(samples):
        groups.setdefault(s.problem_id, []).append(i)
    problems = sorted(groups)
    random.Random(f"{seed}:{epoch}").shuffle(problems)
    return [i for p in problems for i in sorted(groups[p], key=lambda i: samples[i].seq)]
