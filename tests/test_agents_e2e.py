"""The protocol end to end: real NATS, the real gateway with the scripted backend, every agent service."""

from __future__ import annotations

import asyncio
import json

import pytest
from google.protobuf import json_format

from conclave.v1 import agents_pb2, outcome_pb2, problem_pb2
from services.bus import subjects
from tests.agents import scripts
from tests.agents.scripts import CORRECT, DISAGREE, WRONG, R, ceo, team
from tests.conftest import eventually

pytestmark = pytest.mark.asyncio


def two_plus_three(pid: str, **limits) -> problem_pb2.Problem:
    p = problem_pb2.Problem(id=pid, kind=problem_pb2.PROBLEM_KIND_MATH, text="What is 2+3?", profile="math500",
                            reference_answer="5")
    for key, value in limits.items():
        setattr(p.limits, key, value)
    return p


def roles_in_order(traj: outcome_pb2.Trajectory) -> list[tuple[int, int, str]]:
    return [(m.turn, m.round, agents_pb2.Role.Name(m.role).removeprefix("ROLE_").lower()) for m in traj.messages]


async def test_consensus_in_the_first_round_accepts_after_one_turn(agent_stack):
    async with agent_stack(team()) as env:
        result = await env.solve(two_plus_three("consensus-1"))
        traj = await env.trajectory("consensus-1")
    assert result.status == "ok" and result.stop_reason == "accepted"
    assert result.extracted_answer == "5" and result.correct == 1 and result.turns == 1
    assert result.consensus is True
    assert roles_in_order(traj) == [(1, 0, "ceo"), (1, 0, "recruiter"), (1, 0, "solver"),
                                    (1, 1, "critic"), (1, 1, "critic"), (1, 1, "evaluator")]
    assert {m.persona for m in traj.messages if m.role == R.ROLE_CRITIC} == {
        "A checker who verifies each step", "A teacher who explains"}
    assert traj.format_ok and traj.consensus


async def test_a_disagreement_sends_the_reviews_to_the_solver_who_revises(agent_stack):
    script = team(
        solver=[(R.ROLE_SOLVER, "disagreed", "Right, two plus three is five: \\boxed{5}."),
                (R.ROLE_SOLVER, ".", "Two plus three is four: \\boxed{4}.")],
        critic=[(R.ROLE_CRITIC, r"Solution to review:\s*Two plus three is four", DISAGREE)],
    )
    async with agent_stack(script) as env:
        result = await env.solve(two_plus_three("revise-1"))
        traj = await env.trajectory("revise-1")
    assert result.extracted_answer == "5" and result.stop_reason == "accepted"
    assert roles_in_order(traj) == [(1, 0, "ceo"), (1, 0, "recruiter"), (1, 0, "solver"),
                                    (1, 1, "critic"), (1, 1, "critic"), (1, 1, "solver"),
                                    (1, 2, "critic"), (1, 2, "critic"), (1, 2, "evaluator")]
    revision = [m for m in traj.messages if m.role == R.ROLE_SOLVER][1]
    assert "two plus three is five, not four" in revision.call.prompt  # the objection reached the solver
    # The trainer gets the exact chat the solver was sent.
    assert [m.role for m in revision.call.messages] == ["system", "user"]
    assert "two plus three is five, not four" in revision.call.messages[1].content
    assert not [m for m in traj.messages if m.round == 2 and m.role == R.ROLE_CRITIC and not m.agree]


async def test_a_rejected_turn_gets_a_second_turn_under_a_new_ceo_budget(agent_stack):
    script = team(
        ceo=[(R.ROLE_CEO, "Turn 2 of", ceo(n=2, k=8192, direction="Recheck the sum from scratch."))],
        solver=[(R.ROLE_SOLVER, "Recheck the sum", "Rechecked: \\boxed{5}."),
                (R.ROLE_SOLVER, ".", "It is \\boxed{4}.")],
        evaluator=[(R.ROLE_EVALUATOR, r"Solution:\s*It is", WRONG)],
    )
    async with agent_stack(script) as env:
        result = await env.solve(two_plus_three("second-turn-1"))
        traj = await env.trajectory("second-turn-1")
    assert result.turns == 2 and result.stop_reason == "accepted" and result.extracted_answer == "5"
    assert [(d.turn, d.recruit_number, d.max_tokens) for d in traj.decisions] == [(1, 3, 4096), (2, 2, 8192)]
    solver_budgets = [(m.turn, m.call.max_tokens) for m in traj.messages if m.role == R.ROLE_SOLVER]
    assert solver_budgets == [(1, 4096), (2, 8192)]
    critics_turn2 = [m for m in traj.messages if m.turn == 2 and m.role == R.ROLE_CRITIC]
    assert len(critics_turn2) == 1  # N=2 in turn 2: one solver, one critic
    assert [e.correctness for e in traj.evaluations] == [0, 1]


async def test_the_ceo_stop_is_honoured_once_there_is_a_solution(agent_stack):
    script = team(ceo=[(R.ROLE_CEO, "Turn 2 of", ceo(stop=True))], evaluator=[(R.ROLE_EVALUATOR, ".", WRONG)])
    async with agent_stack(script) as env:
        result = await env.solve(two_plus_three("stop-1"))
        traj = await env.trajectory("stop-1")
    assert result.stop_reason == "ceo_stop" and result.extracted_answer == "5"
    assert [agents_pb2.CeoDecision.Action.Name(d.action) for d in traj.decisions] == ["ACTION_CONTINUE", "ACTION_STOP"]
    assert not [m for m in traj.messages if m.turn == 2 and m.role != R.ROLE_CEO]


async def test_the_token_ceiling_stops_the_discussion_with_the_best_answer_so_far(agent_stack):
    script = team(evaluator=[(R.ROLE_EVALUATOR, ".", WRONG)],
                  ceo=[(R.ROLE_CEO, "Turn 2 of", ceo(k=8192)), (R.ROLE_CEO, ".", ceo(k=4096))])
    async with agent_stack(script) as env:
        # Turn 1 at K=4096 fits; in turn 2, two critics at K=8192 each could cross 16000 tokens.
        result = await env.solve(two_plus_three("ceiling-1", max_total_tokens=16000))
        traj = await env.trajectory("ceiling-1")
    assert result.stop_reason == "token_ceiling" and result.extracted_answer == "5"
    assert result.total_tokens <= 16000
    assert "could cross" in result.stop_detail and "of 16000 tokens" in result.stop_detail
    assert roles_in_order(traj)[-1] == (2, 0, "solver")  # stopped before the review round it could not afford
    done = [m for m in traj.messages if m.role == R.ROLE_CRITIC]
    assert len(done) == 2  # turn 1's critics only


async def test_unparsable_outputs_fall_back_as_the_protocol_says_and_are_recorded(agent_stack):
    script = scripts.Script([
        (R.ROLE_CEO, ".", "Hmm, I think the team should go on."),
        (R.ROLE_RECRUITER, ".", "Experts are useful."),
        (R.ROLE_SOLVER, ".", "The answer is \\boxed{5}."),
        (R.ROLE_CRITIC, ".", "[Disagree]"),
        (R.ROLE_EVALUATOR, ".", "Looks fine to me."),
    ])
    async with agent_stack(script) as env:
        result = await env.solve(two_plus_three("fallback-1", max_turns=1))
        traj = await env.trajectory("fallback-1")
    (decision,) = traj.decisions
    assert decision.fallback and decision.recruit_number == 2 and decision.max_tokens == 32000
    ceo_calls = [m for m in traj.messages if m.role == R.ROLE_CEO]
    assert len(ceo_calls) == 3 and all(m.fallback for m in ceo_calls)  # 1 call + 2 retries
    assert len({m.call.raw_text for m in ceo_calls}) == 1  # the scripted model never changes its mind
    critic = [m for m in traj.messages if m.role == R.ROLE_CRITIC]
    assert critic and all(m.fallback and m.agree for m in critic)  # a bare tag counts as agreeing
    assert "bare tag" in critic[-1].fallback_reason
    assert [e.correctness for e in traj.evaluations] == [0] and traj.evaluations[0].fallback
    assert result.stop_reason == "max_turns" and result.extracted_answer == "5"
    assert result.fallbacks == 4 and not traj.format_ok
    recruiter = [m for m in traj.messages if m.role == R.ROLE_RECRUITER]
    assert all(m.fallback for m in recruiter)


async def test_a_malformed_problem_gets_an_error_and_disturbs_nothing_else(agent_stack):
    async with agent_stack(team()) as env:
        good = asyncio.create_task(env.solve(two_plus_three("good-1")))
        reply = await env.nc.request(subjects.PROBLEMS_SUBMIT, b'{"id": "bad-7", "text": 12', timeout=10)
        error = json_format.Parse(reply.data, outcome_pb2.Result())
        invalid = await env.solve(problem_pb2.Problem(id="bad-8", kind=problem_pb2.PROBLEM_KIND_MATH, text=" "))
        result = await good
    assert error.status == "error" and error.error.code == "bad_payload"
    assert invalid.status == "error" and "text is empty" in invalid.error.message
    assert result.status == "ok" and result.extracted_answer == "5"


async def test_single_agent_mode_makes_one_call_and_no_ceo_or_critics(agent_stack):
    async with agent_stack(team()) as env:
        p = two_plus_three("single-1")
        p.single_agent = True
        result = await env.solve(p)
        traj = await env.trajectory("single-1")
    assert roles_in_order(traj) == [(1, 0, "single")]
    assert result.extracted_answer == "5" and result.correct == 1 and result.single_agent


async def test_the_archiver_writes_the_trajectory(agent_stack):
    async with agent_stack(team()) as env:
        await env.solve(two_plus_three("archive-1"))
        path = env.archive_dir / "archive-1.json"
        await eventually(lambda: _exists(path))
    doc = json.loads(path.read_text())
    assert doc["result"]["stop_reason"] == "accepted" and len(doc["messages"]) == 6


async def _exists(path):
    return path.exists()


@pytest.mark.parametrize("victim", ["ceo", "solver"])
async def test_a_sigkilled_service_mid_problem_still_completes_exactly_once(agent_stack, victim):
    async with agent_stack(team(), latency_s=0.4, as_processes=(victim,)) as env:
        pid = f"kill-{victim}-1"
        solving = asyncio.create_task(env.solve(two_plus_three(pid)))
        # Wait until the victim is in the middle of this problem, then kill it without warning.
        await env.wait_event(pid, "decision" if victim == "ceo" else "recruited")
        if victim == "solver":
            await asyncio.sleep(0.2)  # the solver has taken its task and is waiting on the model
        env.kill(victim)
        await env.start_process(victim)  # a replacement replica
        result = await asyncio.wait_for(solving, 60)
        await asyncio.sleep(1.5)  # room for any duplicate to show up
        counts = await env.count(pid)
        traj = await env.trajectory(pid)
    assert result.status == "ok" and result.extracted_answer == "5"
    assert counts == {"results": 1, "trajectories": 1}
    steps = [(m.turn, m.round, m.role, m.index) for m in traj.messages]
    assert len(steps) == len(set(steps)), f"a step was recorded twice: {steps}"


async def test_with_require_passing_tests_failing_tests_overrule_the_evaluator(agent_stack):
    buggy = "```python\ndef add(a, b):\n    return a - b\n```"
    good = "```python\ndef add(a, b):\n    return a + b\n```"
    script = team(
        ceo=[(R.ROLE_CEO, "Turn 2 of", ceo(n=2, k=2048, direction="Make the failing tests pass.")),
             (R.ROLE_CEO, ".", ceo(n=2, k=2048, direction="Write add(a, b)."))],
        solver=[(R.ROLE_SOLVER, "Make the failing tests pass", good), (R.ROLE_SOLVER, ".", buggy)],
        evaluator=[(R.ROLE_EVALUATOR, ".", CORRECT)],  # an evaluator that accepts anything
    )

    def add_problem(pid: str, gate: bool) -> problem_pb2.Problem:
        p = problem_pb2.Problem(id=pid, kind=problem_pb2.PROBLEM_KIND_CODE, profile="humaneval",
                                text="Write a function add(a, b) that returns a + b.")
        p.code.entry_point = "add"
        p.code.tests = "def check(candidate):\n    assert candidate(2, 3) == 5\n"
        if gate:
            p.metadata["profile.require_passing_tests"] = "true"
        return p

    async with agent_stack(script) as env:
        trusting = await env.solve(add_problem("trust-1", gate=False))
        gated = await env.solve(add_problem("gate-1", gate=True))
        traj = await env.trajectory("gate-1")
    assert trusting.stop_reason == "accepted" and trusting.turns == 1 and "a - b" in trusting.extracted_answer
    assert gated.stop_reason == "accepted" and gated.turns == 2 and "a + b" in gated.extracted_answer
    assert [e.passed for e in traj.executions] == [False, True]
    assert [e.correctness for e in traj.evaluations] == [1, 1]  # the first acceptance was overruled


async def test_a_code_problem_is_run_against_its_tests_in_the_sandbox(agent_stack):
    good = "```python\ndef add(a, b):\n    return a + b\n```"
    buggy = "```python\ndef add(a, b):\n    return a - b\n```"
    script = team(
        ceo=[(R.ROLE_CEO, ".", ceo(n=2, k=2048, direction="Write add(a, b) and make the tests pass."))],
        solver=[(R.ROLE_SOLVER, "disagreed", good), (R.ROLE_SOLVER, ".", buggy)],
        critic=[(R.ROLE_CRITIC, r"a - b", "Subtracting is wrong: add must return the sum of both numbers.\n[Disagree]")],
        evaluator=[(R.ROLE_EVALUATOR, r"dataset's tests: ok", CORRECT), (R.ROLE_EVALUATOR, ".", WRONG)],
    )
    problem = problem_pb2.Problem(id="code-1", kind=problem_pb2.PROBLEM_KIND_CODE, profile="humaneval",
                                  text="Write a function add(a, b) that returns a + b.")
    problem.code.entry_point = "add"
    problem.code.tests = "def check(candidate):\n    assert candidate(2, 3) == 5\n    assert candidate(-1, 1) == 0\n"
    async with agent_stack(script) as env:
        result = await env.solve(problem)
        traj = await env.trajectory("code-1")
    assert result.stop_reason == "accepted" and "return a + b" in result.extracted_answer
    (execution,) = traj.executions
    assert execution.passed and execution.dataset_tests and execution.status == "ok"
    executor = [m for m in traj.messages if m.role == R.ROLE_EXECUTOR]
    assert executor == []  # dataset tests: the executor made no model call
    assert result.correct == 1
