"""`conclave audit`: where a team run lost right answers, on hand-made and on recorded trajectories."""

from __future__ import annotations

import json

from google.protobuf import json_format

from conclave.v1 import agents_pb2, outcome_pb2, problem_pb2
from services.evaluation.audit import audit_run, audit_trajectory, markdown, summarize, write
from services.evaluation.loaders import BenchItem
from services.evaluation.runner import RunSettings, run_eval
from tests.agents.scripts import DISAGREE, WRONG, R, ceo, team
from tests.conftest import eventually


def trajectory(pid: str, steps: list[tuple], verdicts: list[int], stop: str = "accepted") -> outcome_pb2.Trajectory:
    """steps: (turn, round, solver text[, fallback]) in order; critics and the CEO do not matter here."""
    t = outcome_pb2.Trajectory(problem=problem_pb2.Problem(id=pid, kind=problem_pb2.PROBLEM_KIND_MATH,
                                                           text="What is 2+3?", reference_answer="5"))
    for seq, (turn, round_, text, *fallback) in enumerate(steps, start=1):
        t.messages.add(seq=seq, turn=turn, round=round_, role=R.ROLE_SOLVER, fallback=bool(fallback),
                       call=agents_pb2.ModelCall(visible_text=text))
    t.evaluations.extend(agents_pb2.Evaluation(correctness=v) for v in verdicts)
    t.result.stop_reason = stop
    return t


FIVE, FOUR = "Two plus three is \\boxed{5}.", "On reflection it is \\boxed{4}."


def test_a_revision_that_turns_right_into_wrong_is_named():
    a = audit_trajectory(trajectory("p1", [(1, 0, FIVE), (1, 1, FOUR)], [1]), single={"correct": True, "extracted": "5"})
    assert a.first_draft.correct and not a.final_correct and a.final_answer == "4"
    assert (a.loss_step, a.loss_at) == ("revision", "turn 1 round 1")
    assert a.context == ["accepted_wrong (turn 1)"]
    assert a.loss_cause == "critique: (none recorded)"  # this hand-made trajectory has no critics


def test_a_wrong_first_draft_where_the_single_agent_was_right():
    a = audit_trajectory(trajectory("p2", [(1, 0, FOUR)], [0], stop="max_turns"), single={"correct": True})
    assert a.loss_step == "first_draft" and a.context == [] and a.loss_cause == "persona: -; direction: -"
    b = audit_trajectory(trajectory("p2", [(1, 0, FOUR)], [0], stop="max_turns"), single={"correct": False})
    assert b.loss_step == "never_right"
    verified = trajectory("p2v", [(1, 0, FOUR)], [0], stop="max_turns")
    verified.problem.profile = "math500-verified"  # first_draft: single
    c = audit_trajectory(verified, single={"correct": True})
    assert c.loss_step == "first_draft" and c.loss_cause.startswith("asked as the single agent")


def test_a_new_turn_loses_an_answer_the_evaluator_rejected_and_the_ceo_stops_on_it():
    a = audit_trajectory(trajectory("p3", [(1, 0, FIVE), (2, 0, FOUR)], [0, 0], stop="ceo_stop"))
    assert (a.loss_step, a.loss_at) == ("new_turn", "turn 2 round 0")
    assert a.context == ["rejected_right (turn 1)", "ceo_stopped_wrong"] and a.single_correct is None


def test_a_malformed_later_solution_does_not_count_as_the_answer():
    a = audit_trajectory(trajectory("p4", [(1, 0, FIVE), (2, 0, "It is \\boxed{answer}", True)], [0, 0],
                                    stop="max_turns"))
    assert a.final_correct and a.loss_step == "" and [d.kept for d in a.drafts] == [True, False]


def test_a_run_is_audited_from_its_results_and_archive(tmp_path):
    archive, run, single = tmp_path / "archive", tmp_path / "mas", tmp_path / "single"
    for d in (archive, run, single):
        d.mkdir()
    cases = {"t/1": trajectory("x-t-1", [(1, 0, FIVE), (1, 1, FOUR)], [1]),
             "t/2": trajectory("x-t-2", [(1, 0, FIVE)], [1])}
    for t in cases.values():
        (archive / f"{t.problem.id}.json").write_text(json_format.MessageToJson(t, preserving_proto_field_name=True))
    (run / "results.jsonl").write_text("".join(json.dumps({"id": i, "problem_id": t.problem.id}) + "\n"
                                               for i, t in cases.items()))
    (single / "results.jsonl").write_text(json.dumps({"id": "t/1", "correct": True, "extracted": "5"}) + "\n"
                                          + json.dumps({"id": "t/2", "correct": False, "extracted": "6"}) + "\n")
    audits = audit_run(run, archive, single)
    s = write(run, audits)
    assert s["single_right_team_wrong"] == 1 and s["team_right_single_wrong"] == 1
    assert s["loss_step_where_single_right"] == {"revision": 1} and s["first_draft_correct"] == 2
    assert "| t/1 | ✓ `5` | ✓ `5` | ✗ `4` | revision turn 1 round 1 |" in (run / "audit.md").read_text()
    assert json.loads((run / "audit.json").read_text())["summary"] == s


async def test_audit_of_a_recorded_team_run(agent_stack, tmp_path):
    script = team(
        solver=[(R.ROLE_SOLVER, "disagreed", "Fixed: \\boxed{4}."), (R.ROLE_SOLVER, ".", FIVE)],
        critic=[(R.ROLE_CRITIC, r"Solution to review:\s*Two plus three", DISAGREE)],
        ceo=[(R.ROLE_CEO, "Turn 2 of", ceo(stop=True))],
        evaluator=[(R.ROLE_EVALUATOR, ".", WRONG)],
    )
    items = [BenchItem(id="sum/0", kind="math", text="What is 2+3?", reference_answer="5")]
    async with agent_stack(script) as env:
        graded = await run_eval(env.nc, items, RunSettings(benchmark="toy", profile="math500"), tmp_path / "mas")
        path = env.archive_dir / f"{graded[0].problem_id}.json"
        await eventually(lambda: _exists(path))
    (a,) = audit_run(tmp_path / "mas", env.archive_dir)
    assert a.first_draft.correct and not a.final_correct and a.loss_step == "revision"
    assert a.context == ["ceo_stopped_wrong"] and a.stop_reason == "ceo_stop"
    assert a.loss_cause.startswith("critique: The sum is wrong")  # the objection the solver gave in to
    assert "revision turn 1 round 1" in markdown([a], summarize([a]))


async def _exists(path):
    return path.exists()
