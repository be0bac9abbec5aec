"""Verification grounded in execution (profiles *-verified) and the ablation switches, on the scripted backend."""

from __future__ import annotations

from conclave.v1 import agents_pb2
from services.agents.check import judge
from tests.agents.scripts import AGREE, CORRECT, DISAGREE, WRONG, R, ceo, team
from tests.test_agents_e2e import roles_in_order, two_plus_three

CHECK_SAYS_5 = "```python\nresult = 2 + 3\nprint('ANSWER:', result)\n```"
ASSERT_CHECK = "```python\nanswer = 4\nassert answer - 3 == 2, 'does not satisfy x - 3 = 2'\nprint('ANSWER:', answer)\n```"


def test_the_executor_reads_the_check_run_itself():
    agrees = judge("math", "\\frac{1}{2}", "ok", "working...\nANSWER: 0.5\n", "")
    assert agrees.passed and not agrees.contradicts and agrees.check_answer == "0.5" and agrees.kind == "check"
    other = judge("math", "4", "ok", "ANSWER: 5\n", "")
    assert other.contradicts and not other.passed and "computed 5, the solution says 4" in other.output
    failed = judge("math", "4", "failed", "", "Traceback ...\nAssertionError: does not satisfy x - 3 = 2\n")
    assert failed.contradicts and failed.status == "failed"
    for status, stdout, stderr in (("ok", "it looks fine\n", ""), ("timeout", "", ""), ("failed", "", "NameError: x")):
        unsure = judge("math", "4", status, stdout, stderr)
        assert not unsure.contradicts and not unsure.passed and "inconclusive" in unsure.output
    assert judge("multiple_choice", "B", "ok", "ANSWER: (B)\n", "").passed
    assert judge("multiple_choice", "B", "ok", "ANSWER: C\n", "").contradicts


def test_a_check_that_only_prints_the_answer_it_was_given_agrees_with_nothing():
    # the two echoes the CPU anchor's audit found, each of which let the evaluator accept a wrong answer
    for code, answer in (('print("ANSWER: 27")', "27"), ("name = 'Angela'\nprint('ANSWER:', 'Angela')", "Angela"),
                         ('print(f"ANSWER: {27}")', "27")):
        echo = judge("math", answer, "ok", f"ANSWER: {answer}\n", "", code=code)
        assert not echo.passed and not echo.contradicts and "computed nothing" in echo.output
    # a value the program computes, or a constant backed by asserts, still agrees
    computed = "x = 14 / 3\nprint('ANSWER:', x)"
    assert judge("math", "14/3", "ok", "ANSWER: 4.666666666666667\n", "", code=computed).passed
    asserted = "a = 27\nassert a ** (1 / 3) == 3\nprint('ANSWER: 27')"
    assert judge("math", "27", "ok", "ANSWER: 27\n", "", code=asserted).passed
    # an echo that disagrees with the solution is still a disagreement the evaluator must answer
    assert judge("math", "27", "ok", "ANSWER: 9\n", "", code='print("ANSWER: 9")').contradicts


def test_a_check_that_prints_an_unformatted_template_says_nothing_about_the_answer():
    # seen in the CPU anchor: print("ANSWER: {Fraction(34, 3)}") meant to agree and was read as a contradiction
    template = judge("math", "\\frac{34}{3}", "ok", "ANSWER: {Fraction(34, 3)}\n", "")
    assert not template.contradicts and not template.passed and "template" in template.output
    # LaTeX braces are answers, not templates
    assert judge("math", "\\frac{34}{3}", "ok", "ANSWER: \\frac{34}{3}\n", "").passed
    assert judge("math", "\\{1, 2\\}", "ok", "ANSWER: {1, 2}\n", "").passed


def verified_script(**overrides):
    rules = {
        "ceo": [(R.ROLE_CEO, "Turn 2 of", ceo(n=2, direction="Recheck the sum from scratch."))],
        "solver": [(R.ROLE_SOLVER, "Recheck the sum", "Rechecked: two plus three is \\boxed{5}."),
                   (R.ROLE_SOLVER, ".", "Two plus three is \\boxed{4}.")],
        "executor": [(R.ROLE_EXECUTOR, "Proposed final answer", CHECK_SAYS_5)],
        "evaluator": [(R.ROLE_EVALUATOR, ".", CORRECT)],  # an evaluator that accepts anything
    }
    return team(**(rules | overrides))


async def test_a_contradicting_check_blocks_the_acceptance_and_the_team_hears_it(agent_stack):
    async with agent_stack(verified_script()) as env:
        p = two_plus_three("verified-1")
        p.profile = "math500-verified"
        result = await env.solve(p)
        traj = await env.trajectory("verified-1")
    assert result.stop_reason == "accepted" and result.turns == 2 and result.extracted_answer == "5"
    assert [(e.kind, e.contradicts, e.passed, e.check_answer) for e in traj.executions] == [
        ("check", True, False, "5"), ("check", False, True, "5")]
    assert [(e.correctness, e.blocked) for e in traj.evaluations] == [(1, True), (1, False)]
    evaluator_prompts = [m.call.messages[1].content for m in traj.messages if m.role == R.ROLE_EVALUATOR]
    assert "CONTRADICTS the solution" in evaluator_prompts[0] and "agrees with the solution" in evaluator_prompts[1]
    critics2 = [m for m in traj.messages if m.turn == 2 and m.role == R.ROLE_CRITIC]
    assert critics2 and all("[executor]: An independent check program" in m.call.messages[1].content for m in critics2)
    solver2 = [m.call.messages[1].content for m in traj.messages if m.turn == 2 and m.role == R.ROLE_SOLVER]
    assert solver2 and all("Your team's answer 4 was checked" in p and "[executor]" not in p for p in solver2)
    executor_calls = [m for m in traj.messages if m.role == R.ROLE_EXECUTOR]
    assert len(executor_calls) == 2 and "Proposed final answer: 4" in executor_calls[0].call.messages[1].content


async def test_a_failed_assert_contradicts_and_a_rebuttal_may_let_the_acceptance_stand(agent_stack):
    script = verified_script(
        executor=[(R.ROLE_EXECUTOR, "Proposed final answer", ASSERT_CHECK)],
        evaluator=[(R.ROLE_EVALUATOR, ".", CORRECT + "\nCheck: the program tests x - 3 = 2, which is not the problem")],
    )
    async with agent_stack(script) as env:
        strict, lenient = two_plus_three("verified-2", max_turns=1), two_plus_three("verified-3", max_turns=1)
        strict.profile = lenient.profile = "math500-verified"
        lenient.metadata["profile.check_rebuttal"] = "true"
        strict_result, lenient_result = await env.solve(strict), await env.solve(lenient)
        traj = await env.trajectory("verified-2")
    assert traj.executions[0].contradicts and traj.executions[0].status == "failed"
    assert traj.evaluations[0].blocked and "not the problem" in traj.evaluations[0].check_reply
    assert strict_result.stop_reason == "max_turns"  # blocked: not accepted
    assert lenient_result.stop_reason == "accepted"  # the evaluator answered the contradiction


async def test_the_paper_profile_runs_no_check(agent_stack):
    async with agent_stack(verified_script()) as env:
        result = await env.solve(two_plus_three("unverified-1"))
        traj = await env.trajectory("unverified-1")
    assert result.stop_reason == "accepted" and result.turns == 1 and result.extracted_answer == "4"
    assert not traj.executions and not [m for m in traj.messages if m.role == R.ROLE_EXECUTOR]


async def test_ablations_withhold_the_direction_neutralise_personas_and_skip_revision(agent_stack):
    script = team(critic=[(R.ROLE_CRITIC, r"Solution to review:\s*Two plus three is five", DISAGREE),
                          (R.ROLE_CRITIC, ".", AGREE)])
    async with agent_stack(script) as env:
        problems = {}
        for name in ("direction", "persona", "norevision"):
            p = two_plus_three(f"ablate-{name}", max_turns=1)
            p.profile = f"math500-ablate-{name}"
            await env.solve(p)
            problems[name] = await env.trajectory(p.id)
    direction, persona, norevision = problems.values()
    solver = next(m for m in direction.messages if m.role == R.ROLE_SOLVER).call.messages[1].content
    critic = next(m for m in direction.messages if m.role == R.ROLE_CRITIC).call.messages[1].content
    assert "check the arithmetic" not in solver and "check the arithmetic" in critic
    assert not [m for m in persona.messages if m.role == R.ROLE_RECRUITER]
    assert {m.persona for m in persona.messages if m.role == R.ROLE_CRITIC} == {"a careful reviewer"}
    assert roles_in_order(norevision) == [(1, 0, "ceo"), (1, 0, "recruiter"), (1, 0, "solver"),
                                          (1, 1, "critic"), (1, 1, "critic"), (1, 1, "evaluator")]
    assert not norevision.consensus


async def test_a_check_runs_in_the_sandbox_and_float_output_matches_a_symbolic_answer():
    from services.sandbox import run_python

    run = await run_python("import math\nprint('ANSWER:', (3, math.pi / 2))\n")
    assert judge("math", "\\left( 3, \\frac{\\pi}{2} \\right)", run.status, run.stdout, run.stderr).passed
    assert judge("math", "(3, 0)", run.status, run.stdout, run.stderr).contradicts


# Deterministic protocol tests (scripted backend) of the verified profiles' departures from the paper
# (first_draft: single, no stop on a contradicted answer, the check shown to the revision): issue 15.

async def test_deterministic_protocol_a_verified_first_draft_is_asked_as_the_single_agent_is(agent_stack):
    async with agent_stack(verified_script()) as env:
        single = two_plus_three("first-draft-single")
        single.single_agent = True
        verified = two_plus_three("first-draft-verified", max_turns=1)
        verified.profile = "math500-verified"
        paper = two_plus_three("first-draft-paper", max_turns=1)
        for p in (single, verified, paper):
            await env.solve(p)
        by_id = {p.id: await env.trajectory(p.id) for p in (single, verified, paper)}
    (alone,) = [m for m in by_id["first-draft-single"].messages if m.role == R.ROLE_SINGLE]
    draft = next(m for m in by_id["first-draft-verified"].messages if m.role == R.ROLE_SOLVER)
    paper_draft = next(m for m in by_id["first-draft-paper"].messages if m.role == R.ROLE_SOLVER)
    # The same prompt, byte for byte, and the same budget as --mode single: no persona, direction or team.
    assert [(m.role, m.content) for m in draft.call.messages] == [(m.role, m.content) for m in alone.call.messages]
    assert draft.call.max_tokens == alone.call.max_tokens and (draft.turn, draft.round) == (1, 0)
    assert "check the arithmetic" not in draft.call.messages[1].content and not draft.persona
    # The paper's profile keeps its solver prompt: the persona and the CEO's direction.
    assert paper_draft.call.messages != draft.call.messages
    assert "check the arithmetic" in paper_draft.call.messages[1].content and paper_draft.persona


def _checked(answer: str, check: str = CHECK_SAYS_5) -> list:
    return [(R.ROLE_EXECUTOR, f"Proposed final answer: {answer}", check)]


async def test_deterministic_protocol_the_ceo_is_not_offered_stop_while_the_check_contradicts(agent_stack):
    script = team(
        ceo=[(R.ROLE_CEO, ".", ceo(n=2, stop=True))],  # a CEO that always wants to stop
        solver=[(R.ROLE_SOLVER, "agreed", "Two plus three is \\boxed{5}."),
                (R.ROLE_SOLVER, ".", "Two plus three is \\boxed{4}.")],
        executor=_checked("4") + _checked("5"),  # the check computes 5: contradicts 4, agrees with 5
        evaluator=[(R.ROLE_EVALUATOR, ".", WRONG)],
    )
    async with agent_stack(script) as env:
        contradicted = two_plus_three("contradicted-1", max_turns=2)
        agreed = two_plus_three("agreed-1", max_turns=2)
        agreed.text += " (agreed)"
        for p in (contradicted, agreed):
            p.profile = "math500-verified"
            await env.solve(p)
        traj = {p.id: await env.trajectory(p.id) for p in (contradicted, agreed)}
        events = env.events["contradicted-1"]
    ceo_prompts = [m.call.messages[1].content for m in traj["contradicted-1"].messages if m.role == R.ROLE_CEO]
    assert len(ceo_prompts) == 2 and traj["contradicted-1"].executions[0].contradicts
    assert "stop" not in ceo_prompts[1].lower() and "Decision: continue\n" in ceo_prompts[1]
    assert "check program contradicts the latest solution" in ceo_prompts[1]
    second = traj["contradicted-1"].decisions[1]
    assert second.action == agents_pb2.CeoDecision.ACTION_CONTINUE and second.stop_set_aside
    assert any("the latest check contradicts the solution" in e.set_aside for e in events if e.type == "decision")
    assert traj["contradicted-1"].result.stop_reason == "max_turns"
    # With a check that agrees, stop is offered and honoured.
    agreed_ceo = [m.call.messages[1].content for m in traj["agreed-1"].messages if m.role == R.ROLE_CEO]
    assert "Decision: continue or stop" in agreed_ceo[1] and traj["agreed-1"].executions[0].passed
    assert traj["agreed-1"].result.stop_reason == "ceo_stop"


async def test_deterministic_protocol_the_revision_is_shown_the_check(agent_stack):
    async with agent_stack(verified_script()) as env:
        p = two_plus_three("revision-check-1")
        p.profile = "math500-verified"
        await env.solve(p)
        traj = await env.trajectory("revision-check-1")
    check = traj.executions[0]
    assert check.contradicts and "the check computed 5, the solution says 4" in check.output
    solver2 = [m.call.messages[1].content for m in traj.messages if m.turn == 2 and m.role == R.ROLE_SOLVER]
    assert solver2
    for prompt in solver2:
        assert "CONTRADICTS the solution" in prompt and "It computed 5; the solution's answer is 4." in prompt
        assert "the check computed 5, the solution says 4" in prompt  # the check program's output
        assert "do not give 4 again" in prompt
    first = next(m for m in traj.messages if m.role == R.ROLE_SOLVER).call.messages[1].content
    assert "checked" not in first  # the first draft has no check to see
