"""The final-answer vote of `final_answer: vote` (profile math500-grounded): the team's answer is the
majority over its solver answers and the values its checks computed; protocol runs on the scripted backend."""

from __future__ import annotations

import pytest

from ceo.answer_vote import CHECK, SOLVER, note_check, note_solution, tally
from ceo.state import ProblemState
from conclave.v1 import outcome_pb2
from services.agents.check import judge, parse_program
from services.evaluation.audit import audit_trajectory
from services.protocol.parsing import ParseError
from tests.agents.scripts import R
from tests.test_agents_e2e import two_plus_three
from tests.test_verified import CHECK_SAYS_5, verified_script

V = outcome_pb2


def checks_print(program: str) -> list:
    """The executor's check, whichever profile asks it: the grounded prompt (computes from scratch, shown no
    answer) or the verified one (shown the proposed answer)."""
    return [(R.ROLE_EXECUTOR, "from scratch", program), (R.ROLE_EXECUTOR, "Proposed final answer", program)]


def rule(vote: outcome_pb2.AnswerVote) -> str:
    return V.VoteRule.Name(vote.rule).removeprefix("VOTE_RULE_").lower()


def test_equivalent_answers_vote_together_and_the_majority_wins():
    # 14/3 from the solver, 4.666... computed, and \frac{14}{3} again: one class of three against 5
    vote = tally("math", [[SOLVER, "14/3", 1, 0], [CHECK, "4.666666666666667", 1, 1], [SOLVER, "5", 2, 0],
                          [SOLVER, "\\frac{14}{3}", 2, 1]], plan_answer="\\frac{14}{3}")
    assert list(vote.class_votes) == [3, 1] and [c.answer_class for c in vote.candidates] == [0, 0, 1, 0]
    assert rule(vote) == "majority" and vote.candidates[vote.winner].answer == "14/3" and not vote.changed


def test_a_computed_value_wins_a_tie_against_a_prose_answer():
    # the anchor's problem 3: the solver said 27, the check computed 9
    vote = tally("math", [[SOLVER, "27", 1, 0], [CHECK, "9", 1, 1]], plan_answer="27")
    assert rule(vote) == "tie_computed" and vote.candidates[vote.winner].answer == "9" and vote.changed


def test_a_tie_of_equals_goes_to_the_earliest_answer_and_a_solver_answer_represents_its_class():
    vote = tally("math", [[SOLVER, "3", 1, 0], [SOLVER, "4", 2, 0]], plan_answer="4")
    assert rule(vote) == "tie_earliest" and vote.candidates[vote.winner].answer == "3" and vote.changed
    vote = tally("math", [[CHECK, "0.5", 1, 1], [SOLVER, "\\frac{1}{2}", 2, 0], [CHECK, "7", 2, 1]], plan_answer="")
    assert rule(vote) == "majority" and vote.candidates[vote.winner].source == SOLVER  # the solver's formatting
    none = tally("math", [], plan_answer="4")
    assert rule(none) == "no_candidate" and none.winner == -1 and not none.changed


def test_a_repeated_answer_is_no_new_vote_and_only_computed_values_vote():
    st = ProblemState(problem_id="p")
    note_solution(st, "math", "So \\boxed{27}.", 1, 0)
    note_solution(st, "math", "Revised: still \\boxed{27}.", 1, 1)  # the same opinion again
    note_solution(st, "math", "No answer here.", 1, 2)
    echo = judge("math", "27", "ok", "ANSWER: 27\n", "", code='print("ANSWER: 27")')
    crashed = judge("math", "27", "failed", "", "NameError: x")
    computed = judge("math", "27", "ok", "ANSWER: 9\n", "", code="print('ANSWER:', len([d for d in range(1, 197) if 196 % d == 0]))")
    for ex in (echo, crashed, computed):
        note_check(st, ex, 1, 3)
    note_solution(st, "math", "Then \\boxed{9}.", 2, 0)
    assert [(s, a) for s, a, _, _ in st.candidates] == [(SOLVER, "27"), (CHECK, "9"), (SOLVER, "9")]
    assert not echo.computed and not crashed.computed and computed.computed


def test_a_program_that_prints_its_value_bare_answers_with_its_last_line_where_the_profile_says_so():
    # seen on the anchor: print(Fraction(result)) computed 14/3 right but printed no ANSWER line
    code = "from fractions import Fraction\nprint(Fraction(3, 1) + Fraction(5, 3))"
    bare = judge("math", "4", "ok", "14/3\n", "", code=code, last_line=True)
    assert bare.computed and bare.contradicts and bare.check_answer == "14/3"
    assert not judge("math", "4", "ok", "14/3\n", "", code=code).computed  # the verified profiles: inconclusive
    assert not judge("math", "27", "ok", "27\n", "", code="print(27)", last_line=True).computed  # an echo
    assert parse_program(f"```python\n{code}\n```", last_line=True) == code
    with pytest.raises(ParseError):
        parse_program(f"```python\n{code}\n```")


async def test_the_team_answers_with_the_computed_value_its_revisions_ignored(agent_stack):
    # The solver says 4 in both turns; each check step's three programs compute 5; the evaluator accepts
    # anything but is blocked. The paper's final answer would be the last plan, 4; the vote answers 5 (1
    # solver vote against 6 computed), and the trajectory says which candidates voted and why 5 won.
    script = verified_script(solver=[(R.ROLE_SOLVER, ".", "Two plus three is \\boxed{4}.")],
                             executor=checks_print(CHECK_SAYS_5))
    async with agent_stack(script) as env:
        grounded, verified = two_plus_three("grounded-1"), two_plus_three("grounded-2")
        grounded.profile, verified.profile = "math500-grounded", "math500-verified"
        result, plain = await env.solve(grounded), await env.solve(verified)
        traj = await env.trajectory("grounded-1")
        plain_traj = await env.trajectory("grounded-2")
    assert plain.extracted_answer == "4" and plain.correct == 0 and not plain_traj.HasField("answer_vote")
    assert result.stop_reason == "max_turns" and result.extracted_answer == "5" and result.correct == 1
    vote = traj.answer_vote
    assert [(c.source, c.answer, c.turn) for c in vote.candidates] == \
        [(SOLVER, "4", 1)] + [(CHECK, "5", 1)] * 3 + [(CHECK, "5", 2)] * 3
    assert list(vote.class_votes) == [1, 6] and rule(vote) == "majority" and vote.changed
    assert [m.index for m in traj.messages if m.role == R.ROLE_EXECUTOR] == [0, 1, 2, 0, 1, 2]
    assert "majority over its solutions and the values its check programs computed" in result.answer
    checks = [m.call.messages[1].content for m in traj.messages if m.role == R.ROLE_EXECUTOR]
    assert len(checks) == 6 and all("from scratch" in c and "Proposed final answer" not in c for c in checks)
    audit = audit_trajectory(traj, single={"correct": True, "extracted": "5"})
    assert audit.final_correct and audit.final_answer == "5" and audit.loss_step == ""
    assert audit.context == ["vote_gained (majority)"]
    assert audit.votes == ["4 ✗ (solver, turn 1)"] + ["5 ✓ (computed, turn 1)"] * 3 + \
        ["5 ✓ (computed, turn 2)"] * 3 + ["winner 5 by majority"]
    assert audit_trajectory(plain_traj, single={"correct": True, "extracted": "5"}).loss_step == "first_draft"


async def solve_grounded(agent_stack, problem_id: str, solver_says: str, program: str,
                         profile: str = "math500-grounded"):
    """Two plus three on the scripted backend: the solver always answers `solver_says`, every check program is
    `program`, the evaluator accepts anything. The Result and the trajectory."""
    script = verified_script(solver=[(R.ROLE_SOLVER, ".", f"Two plus three is \\boxed{{{solver_says}}}.")],
                             executor=checks_print(program))
    async with agent_stack(script) as env:
        p = two_plus_three(problem_id)
        p.profile = profile
        return await env.solve(p), await env.trajectory(problem_id)


async def test_a_team_whose_checks_agree_keeps_its_own_solution(agent_stack):
    result, traj = await solve_grounded(agent_stack, "grounded-3", "5", CHECK_SAYS_5)
    assert result.stop_reason == "accepted" and result.answer == "Two plus three is \\boxed{5}."
    assert list(traj.answer_vote.class_votes) == [4] and not traj.answer_vote.changed


async def test_checks_that_compute_a_wrong_value_twice_outvote_a_right_solution_and_the_audit_says_so(agent_stack):
    # The vote's risk, stated: two wrong computed values outnumber one right prose answer.
    says_4 = "```python\nresult = 2 + 2\nprint('ANSWER:', result)\n```"
    result, traj = await solve_grounded(agent_stack, "grounded-4", "5", says_4)
    assert result.extracted_answer == "4" and result.correct == 0 and rule(traj.answer_vote) == "majority"
    audit = audit_trajectory(traj)
    assert audit.loss_step == "vote" and audit.context == ["vote_lost (majority)"]


async def test_the_lean_grounded_team_spends_its_turn_on_eight_programs_and_one_critic_round(agent_stack):
    # math500-lean-grounded: one critic, one round (an objection asks no revision inside the turn), eight
    # programs per check step; a contradicting check still gives the team its second turn.
    result, traj = await solve_grounded(agent_stack, "lean-1", "4", CHECK_SAYS_5, profile="math500-lean-grounded")
    by_turn = {t: [m.role for m in traj.messages if m.turn == t] for t in (1, 2)}
    for turn in (1, 2):
        assert by_turn[turn].count(R.ROLE_CRITIC) == 1 and by_turn[turn].count(R.ROLE_SOLVER) == 1
        assert by_turn[turn].count(R.ROLE_EXECUTOR) == 8
    assert result.turns == 2 and result.extracted_answer == "5" and list(traj.answer_vote.class_votes) == [1, 16]
