"""Which samples each rank of a distributed run trains on, step by step. Pure Python: no torch.

One process: the epoch order (order.py) cut into global batches of `global_batch` samples, exactly as
before distributed training existed. Several ranks (torchrun): whole problems are dealt to the ranks
so that each gets about the same number of tokens (longest problem first to the least loaded rank),
each rank keeps its problems in the epoch order and each problem's samples in generation order, and
each rank's shard is cut into the same number of steps as one process would take (ceil(samples /
global_batch)) at equal token fractions. So every rank holds every sample of a problem it trains, in
order, and a step asks about the same compute of every rank: the slowest rank sets the pace.

Every rank computes the same plan from the same data and seed, so ranks agree on it without talking;
the global count of trained tokens of a step (the loss's denominator) is known to all of them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass


def batches(order: Sequence[int], size: int) -> list[list[int]]:
    return [list(order[i:i + size]) for i in range(0, len(order), size)]


def problem_runs(order: Sequence[int], problem_of: Sequence[str]) -> list[list[int]]:
    """`order` cut where the problem changes (epoch_order keeps a problem's samples together)."""
    runs: list[list[int]] = []
    for i in order:
        if runs and problem_of[runs[-1][0]] == problem_of[i]:
            runs[-1].append(i)
        else:
            runs.append([i])
    return runs


def shard_problems(order: Sequence[int], problem_of: Sequence[str], tokens: Sequence[int],
                   world: int) -> list[list[int]]:
    """Whole problems to `world` ranks, balanced by tokens; each rank's samples in `order`'s order."""
    runs = problem_runs(order, problem_of)
    load = [0] * world
    owner = [0] * len(runs)
    # Longest first to the least loaded rank (ties: the lower rank): within 4/3 of the best split.
    for k in sorted(range(len(runs)), key=lambda k: (-sum(tokens[i] for i in runs[k]), k)):
        rank = min(range(world), key=lambda r: (load[r], r))
        owner[k] = rank
        load[rank] += sum(tokens[i] for i in runs[k])
    shards: list[list[int]] = [[] for _ in range(world)]
    for k, run in enumerate(runs):
        shards[owner[k]].extend(run)
    return shards


def cut_by_tokens(seq: Sequence[int], tokens: Sequence[int], steps: int) -> list[list[int]]:
    """`seq` in `steps` contiguous chunks of about equal tokens (a sample goes where its middle falls)."""
    chunks: list[list[int]] = [[] for _ in range(steps)]
    total = sum(tokens[i] for i in seq)
    done = 0
    for i in seq:
        middle = done + tokens[i] / 2
        chunks[min(steps - 1, int(steps * middle / total)) if total else 0].append(i)
        done += tokens[i]
    return chunks


@dataclass(frozen=True)
class Step:
    """One optimizer step: the sample indices of every rank (`shards[rank]`, possibly empty)."""

    shards: tuple[tuple[int, ...], ...]

    @property
    def samples(self) -> int:
        return sum(len(s) for s in self.shards)

    def micro_batches(self, rank: int, micro_batch: int) -> list[list[int]]:
        """This rank's micro batches, padded with empty ones to the most any rank has: with sharded
        weights every forward pass is collective, so every rank runs the same number of them."""
        mine = batches(self.shards[rank], micro_batch)
        most = max(1, *(math.ceil(len(s) / micro_batch) for s in self.shards))
        return mine + [[] for _ in range(most - len(mine))]


def epoch_plan(order: Sequence[int], problem_of: Sequence[str], tokens: Sequence[int], world: int,
               global_batch: int) -> list[Step]:
    """The steps of one epoch: the same number for any `world`, ceil(len(order) / global_batch)."""
    if world < 1:
        raise ValueError(f"world size must be at least 1, not {world}")
    if world == 1:
        return [Step((tuple(b),)) for b in batches(order, global_batch)]
    steps = math.ceil(len(order) / global_batch)
    cut = [cut_by_tokens(shard, tokens, steps) for shard in shard_problems(order, problem_of, tokens, world)]
    return [Step(tuple(tuple(cut[r][s]) for r in range(world))) for s in range(steps)]


def steps_per_epoch(n_samples: int, global_batch: int) -> int:
    return math.ceil(n_samples / global_batch)
