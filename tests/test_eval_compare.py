"""Reading a small benchmark honestly: intervals, and single against team compared problem by problem."""

from __future__ import annotations

import json
from dataclasses import asdict

import pytest

from services.cli.main import main
from services.evaluation.compare import NothingToCompare, compare, compare_pooled
from services.evaluation.runner import Graded
from services.evaluation.stats import mcnemar_exact_p, wilson_interval


def graded(pid: str, correct: bool, tokens: int = 100) -> Graded:
    return Graded(id=pid, problem_id=f"run-{pid}", correct=correct, extracted="", stop_reason="accepted",
                  turns=1, total_tokens=tokens, tokens_by_role={}, wall_s=1.0, consensus=True)


def write_run(directory, rows: list[Graded]) -> None:
    directory.mkdir(parents=True)
    (directory / "results.jsonl").write_text("".join(json.dumps(asdict(g)) + "\n" for g in rows))


def test_the_wilson_interval_matches_known_values_and_stays_within_bounds():
    lo, hi = wilson_interval(29, 40)
    assert lo == pytest.approx(0.5717, abs=5e-4) and hi == pytest.approx(0.8389, abs=5e-4)  # worked by hand
    assert wilson_interval(0, 10)[0] == 0.0 and wilson_interval(10, 10)[1] == 1.0
    assert wilson_interval(0, 0) == (0.0, 0.0)


def test_mcnemar_counts_only_the_problems_on_which_the_runs_disagree():
    assert mcnemar_exact_p(1, 6) == pytest.approx(2 * (1 + 7) / 2**7)
    assert mcnemar_exact_p(6, 1) == mcnemar_exact_p(1, 6)
    assert mcnemar_exact_p(0, 0) == 1.0
    assert mcnemar_exact_p(3, 3) == 1.0
    assert mcnemar_exact_p(0, 10) < 0.01


def test_runs_are_compared_on_the_problems_both_graded():
    single = {g.id: g for g in [graded("p2", True), graded("p1", True), graded("p3", False), graded("p4", False),
                                graded("p5", True)]}
    team = {g.id: g for g in [graded("p1", True, 1000), graded("p2", False, 1000), graded("p3", True, 1000),
                              graded("p4", False, 1000)]}  # p5 not graded yet
    c = compare(single, team, ("single", "mas"))
    assert c.problems == 4
    assert (c.both, c.only_a, c.only_b, c.neither) == (1, 1, 1, 1)
    assert c.only_a_ids == ["p2"] and c.only_b_ids == ["p3"]
    assert c.a.correct == 2 and c.b.correct == 2
    assert c.token_ratio == pytest.approx(10.0)
    assert c.p_value == 1.0


def test_problems_are_listed_in_their_benchmark_order():
    ids = ["HumanEval/10", "HumanEval/2", "HumanEval/1"]
    single = {i: graded(i, True) for i in ids}
    team = {i: graded(i, False) for i in ids}
    assert compare(single, team).only_a_ids == ["HumanEval/1", "HumanEval/2", "HumanEval/10"]


def test_runs_with_nothing_in_common_cannot_be_compared():
    with pytest.raises(NothingToCompare):
        compare({"p1": graded("p1", True)}, {"p2": graded("p2", True)})


def test_the_compare_command_prints_and_writes_the_paired_table(tmp_path, capsys):
    write_run(tmp_path / "single", [graded(f"p{i}", i < 3) for i in range(10)])
    write_run(tmp_path / "mas", [graded(f"p{i}", i < 9, 900) for i in range(10)])
    assert main(["compare", str(tmp_path / "single"), str(tmp_path / "mas"), "--out", str(tmp_path / "c.md")]) == 0
    printed = capsys.readouterr().out
    assert "| single | 3/10 (30.0%) |" in printed and "| mas | 9/10 (90.0%) |" in printed
    assert "only single 0, only mas 6" in printed and "mas is better beyond chance" in printed
    assert (tmp_path / "c.md").read_text() == printed.removesuffix("\n")
    assert json.loads((tmp_path / "c.json").read_text())["only_b"] == 6


def test_the_compare_command_says_what_is_missing(tmp_path, capsys):
    assert main(["compare", str(tmp_path / "nope"), str(tmp_path / "nada")]) == 2
    assert "results.jsonl does not exist" in capsys.readouterr().out


def test_repeated_runs_count_each_problem_once_by_its_share_of_right_runs():
    ids = [f"p{i}" for i in range(6)]
    # base: p0 right twice, p1 once; tuned: p0 twice, p1 twice, p2 once, p3 once.
    base = [{i: graded(i, i == "p0" or (i == "p1" and r == 0)) for i in ids} for r in range(2)]
    tuned = [{i: graded(i, i in ("p0", "p1") or (i == "p2" and r == 0) or (i == "p3" and r == 1), 50) for i in ids}
             for r in range(2)]
    c = compare_pooled(base, tuned, ("base", "tuned"))
    assert (c.problems, c.a_better, c.b_better, c.ties) == (6, 0, 3, 3)
    assert c.b_better_ids == ["p1", "p2", "p3"]
    assert c.a.correct_per_run == [2, 1] and c.b.correct_per_run == [3, 3]
    assert c.a.mean_accuracy == pytest.approx(1.5 / 6) and c.b.mean_accuracy == pytest.approx(3 / 6)
    assert c.p_value == mcnemar_exact_p(0, 3)  # the sign test on the problems whose shares differ
    assert c.b.tokens_per_problem == 50
    lo, hi = c.b.interval
    assert 0 <= lo <= c.b.mean_accuracy <= hi <= 1


def test_one_run_a_side_pooled_is_mcnemars_test():
    a = {f"p{i}": graded(f"p{i}", i < 3) for i in range(10)}
    b = {f"p{i}": graded(f"p{i}", 1 <= i < 9) for i in range(10)}
    single, pooled = compare(a, b), compare_pooled([a], [b])
    assert (pooled.a_better, pooled.b_better, pooled.p_value) == (single.only_a, single.only_b, single.p_value)


def test_the_compare_command_pools_repeated_runs(tmp_path, capsys):
    for name, right in (("base", 2), ("base2", 3), ("tuned", 8), ("tuned2", 9)):
        write_run(tmp_path / name, [graded(f"p{i}", i < right) for i in range(10)])
    assert main(["compare", str(tmp_path / "base"), str(tmp_path / "tuned"), "--more-a", str(tmp_path / "base2"),
                 "--more-b", str(tmp_path / "tuned2"), "--out", str(tmp_path / "c.md")]) == 0
    printed = capsys.readouterr().out
    assert "| base | 2 | 2 + 3 (of 10 each) | 25.0% |" in printed and "| tuned | 2 | 8 + 9 (of 10 each) | 85.0% |" in printed
    assert "higher for base on 0, for tuned on 7, equal on 3" in printed and "tuned is better beyond chance" in printed
    assert json.loads((tmp_path / "c.json").read_text())["b_better"] == 7
