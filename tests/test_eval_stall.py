"""A `conclave eval` whose problems stop coming back says so, naming them, instead of waiting silently for
their timeout (a resumed eval on the GPU waited 518 s on two results that had already gone by)."""

from __future__ import annotations

import asyncio
import logging

from conclave.v1 import outcome_pb2
from services.evaluation.loaders import BenchItem
from services.evaluation.runner import RunSettings, run_eval

ITEMS = [BenchItem(id=f"sum/{i}", kind="math", text="What is 2+3?", reference_answer="5") for i in range(3)]


async def test_a_stalled_eval_warns_with_the_problems_it_waits_on(nc, bus, tmp_path, caplog):
    release = asyncio.Event()

    async def solver(nc_, problem, timeout_s=None):
        if problem.id.endswith("sum-2"):  # ids are run-scoped: toy-single-<tag>-sum-2
            await release.wait()  # the one result that does not come back (until the test lets it)
        return outcome_pb2.Result(problem_id=problem.id, status="ok", answer="\\boxed{5}")

    async def let_go_after_the_warning() -> None:
        while not any("1 in flight" in r.getMessage() for r in caplog.records):
            await asyncio.sleep(0.02)
        release.set()

    caplog.set_level(logging.WARNING, logger="services.evaluation.runner")
    helper = asyncio.create_task(let_go_after_the_warning())
    graded = await run_eval(nc, ITEMS, RunSettings(benchmark="toy", mode="single", profile="math500"),
                            tmp_path / "eval", solver=solver, stall_warn_s=0.2)
    await helper
    warning = next(r.getMessage() for r in caplog.records if "1 in flight" in r.getMessage())
    assert warning.startswith("no problem finished in the last 0.2 s") and "the longest waits: sum/2 " in warning
    assert [g.correct for g in graded] == [True, True, True]
