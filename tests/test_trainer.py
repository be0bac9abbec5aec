"""The trainer's data path: which discussions are kept (M500), the chat samples made from them, the
assistant-only labels, and the order they are trained in. The training loop itself needs torch and a
GPU; docs/gpu.md records its run."""

from __future__ import annotations

import json
from dataclasses import asdict

import pytest
from google.protobuf import json_format

from conclave.v1 import agents_pb2, outcome_pb2, problem_pb2
from services.evaluation.runner import Graded
from trainer import dataset, m500
from trainer.encode import IGNORE, EncodeError, encode
from trainer.order import epoch_order
from trainer.samples import Sample, prompt_messages, samples_of
from trainer.sft import build_parser, lr_at

R = agents_pb2


def message(seq: int, role: int, answer: str, *, user: str = "Solve it.", fallback: bool = False):
    call = R.ModelCall(raw_text=answer, visible_text=answer,
                       messages=[R.PromptMessage(role="system", content=f"You are the {R.Role.Name(role)}."),
                                 R.PromptMessage(role="user", content=user)])
    return outcome_pb2.TrajectoryMessage(seq=seq, turn=1, role=role, call=call, fallback=fallback)


def trajectory(pid: str = "p1", *, correct: int = 1, consensus: bool = True, format_ok: bool = True,
               single: bool = False) -> outcome_pb2.Trajectory:
    t = outcome_pb2.Trajectory(problem=problem_pb2.Problem(id=pid, text="What is 2+3?", single_agent=single),
                               consensus=consensus, format_ok=format_ok)
    t.result.correct = correct
    t.messages.extend([
        message(3, R.ROLE_SOLVER, "<think>2+3</think> \\boxed{5}"),
        message(1, R.ROLE_CEO, "Decision: continue"),
        outcome_pb2.TrajectoryMessage(seq=4, role=R.ROLE_EXECUTOR),  # ran code, called no model
        message(2, R.ROLE_RECRUITER, "1. A math expert"),
    ])
    return t


# ---------------------------------------------------------------------------------------------- M500

@pytest.mark.parametrize(("traj", "reason"), [
    (trajectory(), None),
    (trajectory(correct=0), m500.WRONG),
    (trajectory(correct=-1), m500.NOT_GRADED),
    (trajectory(consensus=False), m500.NO_CONSENSUS),
    (trajectory(format_ok=False), m500.FORMAT_BROKEN),
    (trajectory(single=True), m500.SINGLE_AGENT),
    (outcome_pb2.Trajectory(problem=problem_pb2.Problem(id="empty")), m500.EMPTY),
])
def test_m500_keeps_only_correct_consensual_well_formed_team_discussions(traj, reason):
    assert m500.rejection(traj) == reason


def test_relaxing_a_check_keeps_what_fails_only_that_check():
    chosen = m500.select([trajectory("a", format_ok=False), trajectory("b", format_ok=False, correct=0)],
                         allow=(m500.FORMAT_BROKEN,))
    assert [t.problem.id for t in chosen.kept] == ["a"]
    assert chosen.rejected == {m500.WRONG: 1}
    assert chosen.summary() == "kept 1 of 2 trajectories; left out: wrong_answer 1"


# ------------------------------------------------------------------------------------------- samples

def test_one_sample_per_model_call_in_generation_order_ending_with_the_raw_answer():
    samples = samples_of(trajectory())
    assert [(s.seq, s.role) for s in samples] == [(1, "ceo"), (2, "recruiter"), (3, "solver")]
    solver = samples[-1]
    assert [m["role"] for m in solver.messages] == ["system", "user", "assistant"]
    assert solver.messages[-1]["content"] == "<think>2+3</think> \\boxed{5}"  # thinking included
    assert Sample.from_json(json.loads(json.dumps(solver.to_json()))) == solver


def test_archives_from_before_recorded_messages_are_read_back_from_the_flattened_prompt():
    call = R.ModelCall(prompt="<system>\nBe brief.\n\n<user>\nProblem:\n2+3\n\nHistory:\n[critic]: fine")
    assert prompt_messages(call) == [{"role": "system", "content": "Be brief."},
                                     {"role": "user", "content": "Problem:\n2+3\n\nHistory:\n[critic]: fine"}]


# ------------------------------------------------------------------------------------------ encoding

class ChatMLByWords:
    """A stand-in tokenizer: a ChatML template, one token per whitespace-separated piece."""

    vocab: dict[str, int]

    def __init__(self) -> None:
        self.vocab = {}

    def apply_chat_template(self, messages, tokenize=True, add_generation_prompt=False):
        text = "".join(f"<|im_start|> {m['role']} {m['content']} <|im_end|> " for m in messages)
        if add_generation_prompt:
            text += "<|im_start|> assistant "
        return [self.vocab.setdefault(piece, len(self.vocab)) for piece in text.split()]


def test_only_the_assistant_turn_and_its_end_token_are_trained():
    tok = ChatMLByWords()
    msgs = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "2+3?"},
            {"role": "assistant", "content": "it is 5"}]
    e = encode(tok, msgs, max_len=100)
    trained = [t for t, label in zip(e.input_ids, e.labels, strict=True) if label != IGNORE]
    inverse = {v: k for k, v in tok.vocab.items()}
    assert [inverse[t] for t in trained] == ["it", "is", "5", "<|im_end|>"]
    assert e.trained_tokens == 4 and len(e.input_ids) == len(e.labels)


def test_long_samples_are_cut_and_a_prompt_that_does_not_fit_is_refused():
    tok = ChatMLByWords()
    msgs = [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a b c d e f"}]
    assert len(encode(tok, msgs, max_len=8).input_ids) == 8
    with pytest.raises(EncodeError, match="prompt alone"):
        encode(tok, msgs, max_len=3)


# --------------------------------------------------------------------------------------------- order

def test_each_problem_s_samples_stay_together_and_in_order_while_problems_are_shuffled():
    samples = [Sample(problem_id=f"p{p}", seq=s, role="solver", messages=()) for p in range(6) for s in (3, 1, 2)]
    orders = [epoch_order(samples, epoch) for epoch in range(3)]
    for order in orders:
        picked = [samples[i] for i in order]
        assert sorted(order) == list(range(len(samples)))
        for start in range(0, len(picked), 3):
            group = picked[start:start + 3]
            assert len({s.problem_id for s in group}) == 1 and [s.seq for s in group] == [1, 2, 3]
    assert len({tuple(o) for o in orders}) > 1  # a new problem order each epoch
    assert epoch_order(samples, 1) == orders[1]  # and the same one for the same seed


def test_the_learning_rate_warms_up_then_decays_to_zero_on_a_cosine():
    total = 100
    assert lr_at(0, total, 1e-5, 0.05) == pytest.approx(2e-6)
    assert lr_at(4, total, 1e-5, 0.05) == pytest.approx(1e-5)
    assert lr_at(52, total, 1e-5, 0.05) == pytest.approx(0.5e-5, rel=0.05)
    assert lr_at(99, total, 1e-5, 0.05) < 1e-8


def test_the_paper_s_recipe_is_the_default():
    args = build_parser().parse_args(["--base-model", "/models/x"])
    assert (args.epochs, args.lr, args.warmup_ratio, args.seq_len, args.global_batch, args.lora_rank) == \
        (5, 1e-5, 0.05, 32768, 16, 0)
    assert args.bf16 and args.gradient_checkpointing


# ------------------------------------------------------------------------------------- dataset CLI

def write_archive(directory, trajectories) -> None:
    directory.mkdir()
    for t in trajectories:
        (directory / f"{t.problem.id}.json").write_text(json_format.MessageToJson(t))


def test_the_dataset_command_writes_the_selection_and_says_what_it_left_out(tmp_path, capsys):
    write_archive(tmp_path / "archive", [trajectory("good"), trajectory("wrong", correct=0),
                                         trajectory("held-out", correct=-1)])
    (tmp_path / "archive" / "broken.json").write_text("{not json")
    grades = tmp_path / "results.jsonl"
    graded_by_eval = Graded(id="HumanEval/7", problem_id="held-out", correct=True, extracted="", stop_reason="accepted",
                            turns=1, total_tokens=100, tokens_by_role={}, wall_s=1.0, consensus=True)
    grades.write_text(json.dumps(asdict(graded_by_eval)) + "\n")
    out = tmp_path / "m500.jsonl"
    assert dataset.main(["--archive", str(tmp_path / "archive"), "--out", str(out), "--grades", str(grades)]) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(r["problem_id"], r["seq"]) for r in rows] == [("good", 1), ("good", 2), ("good", 3),
                                                            ("held-out", 1), ("held-out", 2), ("held-out", 3)]
    said = capsys.readouterr().out
    assert "kept 2 of 3 trajectories; left out: wrong_answer 1; 1 unreadable files skipped (broken.json)" in said
    assert "6 samples from 2 problems" in said


def test_the_dataset_command_names_a_missing_archive(tmp_path, capsys):
    assert dataset.main(["--archive", str(tmp_path / "nope"), "--out", str(tmp_path / "x.jsonl")]) == 2
    assert "is not a directory" in capsys.readouterr().err


def test_a_step_with_non_finite_gradients_is_skipped_and_too_many_in_a_row_stop_the_run():
    from trainer.sft import NonFiniteGradients, NonFiniteGuard

    guard = NonFiniteGuard(limit=3)
    assert guard.apply(2.5)
    assert not guard.apply(float("nan")) and not guard.apply(float("inf"))
    assert guard.apply(1.0) and guard.in_row == 0  # a finite step resets the count in a row
    assert not guard.apply(float("nan")) and not guard.apply(float("nan"))
    with pytest.raises(NonFiniteGradients, match="3 optimizer steps in a row"):
        guard.apply(float("-inf"))
    assert guard.skipped == 5
