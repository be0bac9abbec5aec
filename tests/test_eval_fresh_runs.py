"""`conclave eval` runs are fresh: ids are scoped to one run, so a rerun after a model change asks the model.

Before run-scoped ids, a second eval on the same stack reused the RESULTS stream's answers for the
benchmark's ids (kept 7 days): a tuned model would have been reported with the base model's results.
The scripted backend stands in for the two models (deterministic; named as such).
"""

from __future__ import annotations

import json

import pytest

from services.evaluation.loaders import BenchItem
from services.evaluation.runner import RunMismatch, RunSettings, load_done, open_run, run_eval
from tests.agents.scripts import R, team

ITEMS = [BenchItem(id=f"sum/{i}", kind="math", text=f"What is 2+3? (variant {i})", reference_answer="5")
         for i in range(2)]
BASE = team()  # answers 5: correct
TUNED = team(single=[(R.ROLE_SINGLE, ".", "The answer is \\boxed{6}.")])  # answers 6: wrong


async def test_a_rerun_after_a_model_change_asks_the_model_again(agent_stack, tmp_path):
    out = tmp_path / "eval"
    base = RunSettings(benchmark="toy", mode="single", profile="math500", model="m", revision="base")
    tuned = RunSettings(benchmark="toy", mode="single", profile="math500", model="m", revision="tuned")
    async with agent_stack(BASE) as env:
        first = open_run(out, base)
        graded = await run_eval(env.nc, ITEMS, first, out)
    assert [g.correct for g in graded] == [True, True]

    # The same NATS server (its RESULTS stream still holds the base answers), another "model".
    async with agent_stack(TUNED) as env:
        with pytest.raises(RunMismatch, match="revision base"):
            open_run(out, tuned)  # resuming would mix two models' answers
        second = open_run(out, tuned, rerun=True)
        regraded = await run_eval(env.nc, ITEMS, second, out)
        counts = [await env.count(g.problem_id) for g in regraded]
    assert second.run_id != first.run_id
    assert [g.correct for g in regraded] == [False, False]  # the tuned model's answers, not stored ones
    assert {g.problem_id for g in regraded}.isdisjoint({g.problem_id for g in graded})
    assert all(c["results"] == 1 for c in counts)
    assert json.loads((out / "run.json").read_text())["revision"] == "tuned"
    assert len(load_done(out / f"results.{first.run_id}.jsonl")) == 2  # the earlier run kept aside


async def test_resuming_keeps_the_run_and_its_ids(agent_stack, tmp_path):
    out = tmp_path / "eval"
    settings = RunSettings(benchmark="toy", mode="single", profile="math500", model="m", revision="base")
    async with agent_stack(BASE) as env:
        first = open_run(out, settings)
        await run_eval(env.nc, ITEMS[:1], first, out)
        again = open_run(out, settings)
        graded = await run_eval(env.nc, ITEMS, again, out)
    assert again.run_id == first.run_id
    assert all(g.problem_id.startswith(first.id_prefix()) for g in graded)
