"""`conclave eval`: grading through the real stack, reports and plots, and resuming after an interruption."""

from __future__ import annotations

import asyncio
import json

import nats
import pytest

from services.bus import subjects, topology
from services.client.solve import existing_result
from services.evaluation import report
from services.evaluation.loaders import BenchItem
from services.evaluation.runner import RunSettings, load_done, run_eval, trajectory_of
from tests.agents.scripts import CORRECT, R, ceo, team

ITEMS = [BenchItem(id=f"sum/{i}", kind="math", text=f"What is 2+3? (variant {i})", reference_answer="5")
         for i in range(6)]


class Interrupted(Exception):
    pass


async def test_the_runner_grades_writes_a_report_and_resumes_after_an_interruption(agent_stack, tmp_path):
    # Variant 3 gets a wrong answer, so the grade is not simply "all correct".
    script = team(solver=[(R.ROLE_SOLVER, r"variant 3\)", "It is \\boxed{6}.")])
    out = tmp_path / "eval"
    settings = RunSettings(benchmark="toy", profile="math500", concurrency=1)
    async with agent_stack(script) as env:
        graded_first: list[str] = []

        def stop_after_two(g, done, total):
            if g is not None:
                graded_first.append(g.id)
                if len(graded_first) == 2:
                    raise Interrupted  # as if the process died mid-run

        with pytest.raises(ExceptionGroup) as info:
            await run_eval(env.nc, ITEMS, settings, out, stop_after_two)
        assert info.group_contains(Interrupted)
        await asyncio.sleep(0.5)
        assert sorted(load_done(out / "results.jsonl")) == sorted(graded_first)

        resumed: list[str] = []
        graded = await run_eval(env.nc, ITEMS, settings, out,
                                lambda g, d, t: resumed.append(g.id) if g is not None else None)
        counts = {item.id: await env.count(f"toy-mas-{settings.tag()}-{item.id.replace('/', '-')}") for item in ITEMS}
    assert set(resumed) == {i.id for i in ITEMS} - set(graded_first)  # nothing graded twice
    assert all(c == {"results": 1, "trajectories": 1} for c in counts.values())  # nothing solved twice
    assert [g.id for g in graded] == [i.id for i in ITEMS]
    assert [g.correct for g in graded] == [True, True, True, False, True, True]
    lines = (out / "results.jsonl").read_text().splitlines()
    assert len(lines) == len(ITEMS)

    summary = report.write(out, settings, graded)
    assert summary["correct"] == 5 and summary["problems"] == 6 and summary["consensus_rate"] == 1.0
    assert summary["ceo_decisions"]["action"] == {"continue": 6}
    assert "| 6 | 5 | 83.3% (44%–97%) |" in (out / "report.md").read_text()
    assert json.loads((out / "report.json").read_text())["summary"]["accuracy"] == pytest.approx(5 / 6)
    for png in ("accuracy_vs_tokens.png", "budgets.png"):
        assert (out / png).read_bytes()[:4] == b"\x89PNG"


async def test_a_sweep_varies_the_profile_through_problem_metadata(agent_stack, tmp_path):
    async with agent_stack(team()) as env:
        rows = []
        for team_size in (2, 3):
            settings = RunSettings(benchmark="toy", profile="math500", team_size=team_size, max_turns=1)
            graded = await run_eval(env.nc, ITEMS[:2], settings, tmp_path / f"team{team_size}")
            traj = await env.trajectory(graded[0].problem_id)
            critics = {m.index for m in traj.messages if m.role == R.ROLE_CRITIC}
            assert len(critics) == team_size - 1
            rows.append(({"team": team_size}, report.summarize(graded)))
    report.write_sweep(tmp_path, rows)
    table = (tmp_path / "sweep.md").read_text()
    assert "| team | accuracy | tokens/problem | problems |" in table and "| 3 | 100.0% |" in table


async def test_by_default_the_team_never_sees_the_tests_that_grade_it(agent_stack, tmp_path):
    add = BenchItem(id="add/0", kind="code", text="Write add(a, b) that returns the sum.", entry_point="add",
                    tests="def check(candidate):\n    assert candidate(2, 3) == 5\n")
    script = team(
        ceo=[(R.ROLE_CEO, ".", ceo(n=2, k=2048, stop=True))],
        solver=[(R.ROLE_SOLVER, ".", "```python\ndef add(a, b):\n    return a + b\n```")],
        executor=[(R.ROLE_EXECUTOR, ".", "```python\nassert add(1, 1) == 2\n```")],
        evaluator=[(R.ROLE_EVALUATOR, ".", CORRECT)],
    )
    async with agent_stack(script) as env:
        held_out = (await run_eval(env.nc, [add], RunSettings(benchmark="toy", profile="humaneval"),
                                   tmp_path / "model"))[0]
        shown = (await run_eval(env.nc, [add], RunSettings(benchmark="toy", profile="humaneval",
                                                           executor_tests="dataset"), tmp_path / "dataset"))[0]
        held_out_traj = await env.trajectory(held_out.problem_id)
        shown_traj = await env.trajectory(shown.problem_id)
    (execution,) = held_out_traj.executions
    assert not execution.dataset_tests and execution.passed  # ran the executor's own test
    assert "candidate(2, 3)" not in held_out_traj.problem.code.tests
    assert [m.role for m in held_out_traj.messages].count(R.ROLE_EXECUTOR) == 1
    (execution,) = shown_traj.executions
    assert execution.dataset_tests and execution.passed
    assert held_out.correct and shown.correct  # graded with the dataset's tests either way


async def test_a_jetstream_that_does_not_answer_costs_a_result_its_decisions_not_the_run(plain_nats):
    # A subscriber takes the JetStream API requests and never answers: what a JetStream too busy to answer
    # looks like to the client (seen on the GPU under a vote of 64 problems x 32 samples, where it ended the
    # whole eval).
    nc = await nats.connect(plain_nats)
    asked = []

    async def busy(msg):
        asked.append(msg.subject)

    await nc.subscribe("$JS.API.>", cb=busy)
    try:
        assert await trajectory_of(nc, "p-1", attempts=2, timeout_s=0.3, backoff_s=0) is None
        assert len(asked) == 2 and all("TRAJECTORIES" in s for s in asked)
    finally:
        await nc.close()


async def test_a_result_lookup_the_store_leaves_unanswered_is_asked_again_before_a_problem_is_published(plain_nats):
    # The eighth GPU lease: under a vote's burst, lookups went unanswered and each such sample counted as an
    # empty vote. Here a subscriber stands in for a JetStream that answers only the third direct get, with
    # "no such message" (status 404), as a store without a result for the id does.
    nc = await nats.connect(plain_nats)
    asked = []

    async def slow_store(msg):
        asked.append(msg.subject)
        if len(asked) == 3:
            await nc.publish(msg.reply, b"", headers={"Status": "404", "Description": "Message Not Found"})

    await nc.subscribe("$JS.API.>", cb=slow_store)
    try:
        assert await existing_result(nc, "p-1", timeout_s=0.3, attempts=3, backoff_s=0) is None
        assert asked == [f"$JS.API.DIRECT.GET.{topology.RESULTS.name}.{subjects.result('p-1')}"] * 3
        asked.clear()
        with pytest.raises(TimeoutError):
            await existing_result(nc, "p-2", timeout_s=0.3, attempts=2, backoff_s=0)
        assert len(asked) == 2
    finally:
        await nc.close()
