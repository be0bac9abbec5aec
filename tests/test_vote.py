"""Majority voting: answers grouped per task kind, the tie rule, token matching, and a vote run on the bus."""

from __future__ import annotations

import json

import pytest

from conclave.v1 import outcome_pb2, problem_pb2
from services.evaluation import vote_code
from services.evaluation.compare import compare_dirs
from services.evaluation.loaders import BenchItem
from services.evaluation.runner import RunSettings, run_eval
from services.evaluation.vote import VoteSettings, VoteSolver, majority, next_wave, settings_for
from tests.agents.scripts import R, team


def test_equivalent_math_answers_form_one_class():
    tally = majority("math", ["so \\boxed{3}", "x = \\boxed{\\frac{1}{2}}", "no answer here", "\\boxed{0.5}",
                              "\\boxed{3}", "\\boxed{1/2}"])
    assert tally.winner == 1 and tally.votes == 3  # 1/2, 0.5 and \frac{1}{2} are one answer
    assert tally.classes == [[0, 4], [1, 3, 5]]


def test_a_tie_goes_to_the_class_sampled_first():
    assert majority("math", ["\\boxed{4}", "\\boxed{3}", "\\boxed{3}", "\\boxed{4}"]).winner == 0
    assert majority("math", ["\\boxed{7}", "\\boxed{8}", "\\boxed{9}"]).winner == 0  # all different: sample 0, as one call would answer


def test_choices_vote_by_letter_and_code_by_syntax_tree():
    assert majority("multiple_choice", ["The answer is (B)", "\\boxed{C}", "\\boxed{B}"]).winner == 0
    a = "```python\ndef f(x):\n    '''Doubles.'''\n    return x * 2  # twice\n```"
    b = "```python\ndef f(x):\n    return x*2\n```"
    c = "```python\ndef f(x):\n    return x + x\n```"
    tally = majority("code", [c, a, b])
    assert tally.winner == 1 and tally.votes == 2  # comments, docstring and spacing do not split a class


def test_no_answer_in_any_sample_means_no_winner():
    tally = majority("math", ["I am not sure.", ""])
    assert tally.winner is None and tally.votes == 0


def test_waves_land_near_the_target_tokens():
    assert next_wave(0, 0, 5000, 1.0, 64) == 1  # one sample first, to learn what a sample costs
    assert next_wave(700, 1, 5000, 700, 64) == 6  # 4300 left at 700 per sample
    assert next_wave(4900, 7, 5000, 700, 64) == 0  # one more would overshoot by more than half a sample
    assert next_wave(700, 1, 5000, 700, 3) == 2  # never beyond k_max


def test_sample_ids_stay_valid_subject_tokens(tmp_path):
    from services.bus.subjects import valid_problem_id

    solver = VoteSolver(VoteSettings(k=2), tmp_path)
    long_id = "x" * 128
    ids = {solver.sample(problem_pb2.Problem(id=long_id), i).id for i in range(12)}
    assert len(ids) == 12 and all(valid_problem_id(i) for i in ids)


def test_k_auto_needs_a_run_to_match(tmp_path):
    with pytest.raises(ValueError, match="--match"):
        settings_for("auto", None, 64)
    with pytest.raises(FileNotFoundError):
        settings_for("auto", tmp_path, 64)
    with pytest.raises(ValueError, match="between 1"):
        settings_for("0", None, 64)


def _math(pid: str) -> problem_pb2.Problem:
    p = problem_pb2.Problem(id=pid, kind=problem_pb2.PROBLEM_KIND_MATH, text="What is 2+3?")
    p.metadata["source_id"] = "sum/0"
    return p


async def test_k_auto_draws_samples_until_the_team_tokens_are_spent(tmp_path):
    answers = iter(["\\boxed{4}", "\\boxed{5}", "\\boxed{5}", "\\boxed{4}", "\\boxed{5}", "\\boxed{6}"])
    seen: list[problem_pb2.Problem] = []

    async def fake_solve(nc, problem, *, timeout_s=None):
        seen.append(problem)
        text = next(answers)
        r = outcome_pb2.Result(problem_id=problem.id, status="ok", answer=text, extracted_answer=text[7:-1],
                               total_tokens=1000)
        r.tokens.add(role=R.ROLE_SINGLE, prompt_tokens=400, completion_tokens=600, calls=1)
        return r

    solver = VoteSolver(VoteSettings(k=0, targets={"sum/0": 5200}), tmp_path, solve=fake_solve)
    result = await solver(None, _math("v-sum-0"))
    assert [p.id for p in seen] == [f"v-sum-0-s{i}" for i in range(5)] and all(p.single_agent for p in seen)
    assert result.total_tokens == 5000 and result.turns == 5 and result.extracted_answer == "5"
    assert result.tokens[0].completion_tokens == 3000
    (record,) = [json.loads(line) for line in (tmp_path / "votes.jsonl").read_text().splitlines()]
    assert record["k"] == 5 and record["votes"] == 3 and record["winner"] == 1 and record["target_tokens"] == 5200


async def test_a_vote_run_samples_the_single_agent_on_the_bus_and_compares_like_any_run(agent_stack, tmp_path):
    items = [BenchItem(id=f"sum/{i}", kind="math", text=f"What is 2+3? (variant {i})", reference_answer="5")
             for i in range(2)]
    script = team(single=[(R.ROLE_SINGLE, r"variant 1\)", "It is \\boxed{6}."),
                          (R.ROLE_SINGLE, "assert statements", "```python\nassert add(1, 2) == 3\n```")])
    async with agent_stack(script) as env:
        single = await run_eval(env.nc, items, RunSettings(benchmark="toy", mode="single", profile="math500"),
                                tmp_path / "single")
        vote_dir = tmp_path / "vote"
        vote = await run_eval(env.nc, items, RunSettings(benchmark="toy", mode="vote", profile="math500"), vote_dir,
                              solver=VoteSolver(VoteSettings(k=3), vote_dir))
        code = problem_pb2.Problem(id="c", kind=problem_pb2.PROBLEM_KIND_CODE, profile="mbpp", text="Write add(a, b).")
        code.code.entry_point = "add"
        written = await env.solve(vote_code.tests_problem(code, "toy-vote-c"))  # through intake, as a vote asks it
        trajectories = [await env.trajectory(f"toy-vote-{RunSettings(benchmark='toy', mode='vote', profile='math500').tag()}-sum-0-s{i}")
                        for i in range(3)]
    assert [g.correct for g in vote] == [True, False]
    assert all(g.turns == 3 and g.stop_reason == "vote" for g in vote)
    assert vote[0].total_tokens == 3 * single[0].total_tokens  # three independent single-agent calls
    assert all([m.role for m in t.messages] == [R.ROLE_SINGLE] for t in trajectories)
    assert written.status == "ok" and vote_code.split_asserts(written.answer) == ("", ["assert add(1, 2) == 3"])
    c = compare_dirs(tmp_path / "single", vote_dir)
    assert c.problems == 2 and c.b.tokens_per_problem == 3 * c.a.tokens_per_problem


async def test_differing_code_samples_are_decided_by_the_models_own_tests(tmp_path):
    buggy = "```python\ndef add(a, b):\n    return a - b\n```"
    good = "```python\ndef add(a, b):\n    return a + b\n```"
    tests = "```python\nimport math\nassert add(2, 3) == 5\nassert add(0, 0) == 0\nassert math.isclose(add(1, 1), 2)\n```"
    asked: list[problem_pb2.Problem] = []

    async def fake_solve(nc, problem, *, timeout_s=None):
        asked.append(problem)
        text = tests if problem.id.endswith("-tests") else {"0": buggy, "1": buggy, "2": good}[problem.metadata["vote_sample"]]
        return outcome_pb2.Result(problem_id=problem.id, status="ok", answer=text, total_tokens=100)

    p = problem_pb2.Problem(id="v-add-0", kind=problem_pb2.PROBLEM_KIND_CODE, profile="mbpp",
                            text="Write add(a, b) that returns the sum.")
    p.code.entry_point = "add"
    result = await VoteSolver(VoteSettings(k=3), tmp_path, solve=fake_solve)(None, p)
    assert "a + b" in result.answer  # one sample against two, but it passes all three asserts
    assert result.turns == 3 and result.total_tokens == 400  # the tests call's tokens count
    tests_call = asked[-1]
    assert tests_call.single_agent and tests_call.kind == problem_pb2.PROBLEM_KIND_OPEN_ENDED
    assert "assert statements" in tests_call.text and "add" in tests_call.text and not tests_call.code.tests
    (record,) = [json.loads(line) for line in (tmp_path / "votes.jsonl").read_text().splitlines()]
    assert record["classes"] == [[0, 1], [2]] and record["asserts_passed"] == [1, 3] and record["winner"] == 2
