"""Distributed SFT without torch: which samples each rank trains at each step (whole problems, in
generation order, token-balanced; exactly today's batches on one process) and the checkpoint
bookkeeping (latest complete checkpoint, pruning, resume checks, metrics kept on resume).
tests/test_trainer_fsdp.py runs the real thing under torchrun when torch is installed."""

from __future__ import annotations

import json
import math
import random

import pytest

from trainer.checkpoint import (
    STATE_FILE,
    Checkpoints,
    ResumeError,
    TrainerState,
    check_resumable,
    fingerprint,
    position,
    trim_metrics,
)
from trainer.order import epoch_order
from trainer.samples import Sample
from trainer.sft import build_parser
from trainer.shard import batches, cut_by_tokens, epoch_plan, shard_problems


def corpus(problems: int = 13, seed: int = 1) -> tuple[list[Sample], list[int]]:
    """Problems of 1..9 samples with uneven lengths, stored out of generation order."""
    rng = random.Random(seed)
    samples, tokens = [], []
    for p in range(problems):
        seqs = list(range(1, rng.randint(1, 9) + 1))
        rng.shuffle(seqs)
        for seq in seqs:
            samples.append(Sample(problem_id=f"p{p:02d}", seq=seq, role="solver", messages=()))
            tokens.append(rng.randint(50, 2000))
    return samples, tokens


def plan_of(samples, tokens, world, global_batch=16, epoch=0):
    return epoch_plan(epoch_order(samples, epoch), [s.problem_id for s in samples], tokens, world, global_batch)


def test_one_process_trains_exactly_the_batches_it_always_did():
    samples, tokens = corpus()
    for epoch in range(3):
        order = epoch_order(samples, epoch)
        plan = plan_of(samples, tokens, 1, 16, epoch)
        assert [list(step.shards[0]) for step in plan] == batches(order, 16)
        assert all(step.micro_batches(0, 4) == batches(step.shards[0], 4) for step in plan)


@pytest.mark.parametrize("world", [2, 3, 4])
def test_each_rank_trains_whole_problems_in_generation_order(world):
    samples, tokens = corpus()
    order = epoch_order(samples, 0)
    plan = plan_of(samples, tokens, world)
    assert len(plan) == math.ceil(len(samples) / 16)  # as many steps as one process takes
    per_rank = [[i for step in plan for i in step.shards[r]] for r in range(world)]
    assert sorted(i for rank in per_rank for i in rank) == list(range(len(samples)))  # each sample once
    owner = {}
    for rank, seq in enumerate(per_rank):
        for i in seq:
            assert owner.setdefault(samples[i].problem_id, rank) == rank, "a problem split over ranks"
    for rank, seq in enumerate(per_rank):
        # Each rank: its problems in the epoch's order, each problem's samples together and in order.
        assert seq == [i for i in order if owner[samples[i].problem_id] == rank]
        pids = [samples[i].problem_id for i in seq]
        for p in set(pids):
            at = [k for k, q in enumerate(pids) if q == p]
            assert at == list(range(at[0], at[-1] + 1))
            assert [samples[i].seq for i in seq if samples[i].problem_id == p] == sorted(
                s.seq for s in samples if s.problem_id == p)


@pytest.mark.parametrize("world", [2, 4])
def test_ranks_get_about_the_same_tokens(world):
    samples, tokens = corpus(problems=40)
    shards = shard_problems(epoch_order(samples, 0), [s.problem_id for s in samples], tokens, world)
    load = [sum(tokens[i] for i in shard) for shard in shards]
    biggest_problem = max(sum(t for s, t in zip(samples, tokens, strict=True) if s.problem_id == p)
                          for p in {s.problem_id for s in samples})
    assert max(load) - min(load) <= biggest_problem  # greedy longest-first: off by at most one problem
    # Each step asks about the same of every rank: within one sample's tokens of an even cut.
    plan = plan_of(samples, tokens, world)
    for r in range(world):
        for step in plan:
            got = sum(tokens[i] for i in step.shards[r])
            assert abs(got - load[r] / len(plan)) <= max(tokens)


def test_a_step_cut_keeps_order_and_puts_each_sample_where_its_middle_falls():
    tokens = [10, 10, 100, 10, 10, 60]
    chunks = cut_by_tokens(range(6), tokens, 2)
    assert chunks == [[0, 1, 2], [3, 4, 5]]  # 200 tokens: sample 2's middle (70) is before 100
    assert [i for c in chunks for i in c] == list(range(6))
    assert cut_by_tokens([], tokens, 3) == [[], [], []]


def test_every_rank_runs_as_many_forward_passes_as_the_busiest_one():
    samples, tokens = corpus()
    for step in plan_of(samples, tokens, 3):
        counts = [len(step.micro_batches(r, 2)) for r in range(3)]
        assert len(set(counts)) == 1 and counts[0] >= 1
        for r in range(3):
            real = [m for m in step.micro_batches(r, 2) if m]
            assert [i for m in real for i in m] == list(step.shards[r])  # padding only at the end


def test_more_ranks_than_problems_leaves_some_ranks_only_padding():
    samples = [Sample(problem_id="only", seq=s, role="solver", messages=()) for s in (1, 2, 3)]
    plan = plan_of(samples, [5, 5, 5], 4, global_batch=2)
    assert len(plan) == 2
    assert [len(step.shards[0]) for step in plan] == [2, 1] or [len(step.shards[0]) for step in plan] == [1, 2]
    assert all(not step.shards[r] and step.micro_batches(r, 1) == [[]] * len(step.shards[0])
               for step in plan for r in (1, 2, 3))
    with pytest.raises(ValueError, match="at least 1"):
        plan_of(samples, [5, 5, 5], 0)


# ------------------------------------------------------------------------------------------ checkpoints

def state(step: int, fp: str = "abc", world: int = 2) -> TrainerState:
    epoch, in_epoch = position(step, 5)
    return TrainerState(step=step, epoch=epoch, step_in_epoch=in_epoch, total_steps=20, world_size=world,
                        data_fingerprint=fp, trained_tokens=step * 100, elapsed_s=step * 1.5)


def test_the_latest_complete_checkpoint_is_the_one_resumed_and_old_ones_are_pruned(tmp_path):
    ckpts = Checkpoints(tmp_path / "checkpoints")
    assert ckpts.latest() is None
    for step in (2, 4, 6):
        ckpts.path(step).mkdir(parents=True)
        ckpts.mark_complete(state(step))
    ckpts.path(1).mkdir()  # a save killed before it finished, older than the latest: removed
    ckpts.path(8).mkdir()  # a save in progress (or killed): ignored, but not removed
    latest, path = ckpts.latest()
    assert (latest, path) == (state(6), ckpts.path(6))
    assert TrainerState.from_json((path / STATE_FILE).read_text()) == state(6)
    assert sorted(p.name for p in ckpts.prune(keep=2)) == ["step-00000001", "step-00000002"]
    assert sorted(p.name for p in ckpts.root.iterdir()) == ["step-00000004", "step-00000006", "step-00000008"]
    assert not list(ckpts.root.rglob("*.tmp"))


def test_resuming_refuses_other_data_and_warns_about_another_world_size():
    assert check_resumable(state(4, "abc", world=2), "abc", 2) == []
    (warning,) = check_resumable(state(4, "abc", world=2), "abc", 4)
    assert "2 ranks, resuming on 4" in warning
    with pytest.raises(ResumeError, match="other data or settings"):
        check_resumable(state(4, "abc"), "def", 2)
    assert position(12, 5) == (2, 2)


def test_the_fingerprint_follows_the_samples_and_the_recipe():
    rows = [("p1", 1, 100), ("p1", 2, 80)]
    recipe = {"seed": 0, "global_batch": 16}
    assert fingerprint(rows, recipe) == fingerprint(list(rows), dict(recipe))
    assert fingerprint(rows, recipe) != fingerprint([("p1", 1, 100), ("p1", 2, 81)], recipe)
    assert fingerprint(rows, recipe) != fingerprint(rows, {**recipe, "seed": 1})


def test_resuming_keeps_the_metrics_rows_up_to_the_checkpoint(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text("".join(json.dumps({"step": s, "loss": 1.0 / s}) + "\n" for s in range(1, 6)))
    assert trim_metrics(path, 3) == 3
    assert [json.loads(line)["step"] for line in path.read_text().splitlines()] == [1, 2, 3]
    assert trim_metrics(tmp_path / "new.jsonl", 3) == 0 and (tmp_path / "new.jsonl").read_text() == ""


def test_the_checkpoint_options_parse_and_default_off():
    args = build_parser().parse_args(["--base-model", "/m"])
    assert (args.save_every, args.resume, args.stop_after, args.keep_checkpoints) == (0, False, 0, 2)
    args = build_parser().parse_args(["--base-model", "/m", "--save-every", "50", "--resume", "--stop-after", "3"])
    assert (args.save_every, args.resume, args.stop_after) == (50, True, 3)


def test_resume_is_decided_before_any_weights_load(tmp_path, capsys):
    from trainer.distributed import Dist
    from trainer.settings import TrainSettings
    from trainer.sft import find_resume

    one = Dist(rank=0, world=1, local_rank=0, device="cpu")
    cfg = TrainSettings(base_model="/m", output=tmp_path, save_every=2)
    assert find_resume(cfg, one, "abc") is None  # nothing there: a fresh start
    assert find_resume(cfg.model_copy(update={"resume": True}), one, "abc") is None
    assert "no complete checkpoint" in capsys.readouterr().out
    ckpts = Checkpoints(tmp_path / "checkpoints")
    ckpts.path(4).mkdir(parents=True)
    ckpts.mark_complete(state(4, "abc", world=1))
    assert find_resume(cfg.model_copy(update={"resume": True}), one, "abc") == (state(4, "abc", world=1), ckpts.path(4))
    with pytest.raises(ResumeError, match="other data or settings"):
        find_resume(cfg.model_copy(update={"resume": True}), one, "def")
    # A fresh run that would save among an earlier run's checkpoints is refused; one that saves none is not.
    with pytest.raises(ResumeError, match=r"up to step 4\): pass --resume"):
        find_resume(cfg, one, "abc")
    assert find_resume(cfg.model_copy(update={"save_every": 0}), one, "abc") is None
