"""Team behaviour fixes (issue 15) on the scripted backend: no stop before a solution, critics re-asked for
reasons, and a malformed later solution never replacing an answer the team had."""

from __future__ import annotations

import pytest

from conclave.v1 import agents_pb2
from services.protocol import parsing
from tests.agents.scripts import AGREE, WRONG, R, ceo, team
from tests.test_agents_e2e import two_plus_three

MENU = (4096, 8192)


def test_a_stop_not_on_offer_is_read_as_continue():
    text = "Decision: stop\nRecruit Number: 2\nDirection: none\nMaximum Tokens: 4096"
    d = parsing.parse_decision(text, n_min=2, n_cap=3, menu=MENU, allow_stop=False)
    assert not d.stop and d.stop_set_aside
    assert parsing.parse_decision(text, n_min=2, n_cap=3, menu=MENU).stop


@pytest.mark.parametrize("boxed", ["answer", "\\text{Your answer}", "<answer>", "final_answer", "..."])
def test_placeholder_answers_are_refused(boxed):
    with pytest.raises(parsing.ParseError, match="placeholder"):
        parsing.check_solution(f"So the result is \\boxed{{{boxed}}}", "math")


def test_a_solution_that_copies_the_direction_is_refused():
    direction = "Recompute the sum carefully and put the result in \\boxed{5} at the end."
    with pytest.raises(parsing.ParseError, match="repeats the direction"):
        parsing.check_solution(f"Sure. {direction}", "math", echo_of=direction)
    parsing.check_solution("Two plus three: I add 2 and 3 and get five, so \\boxed{5}.", "math", echo_of=direction)


async def test_the_ceo_is_not_offered_stop_before_a_solution_and_a_stop_is_set_aside(agent_stack):
    script = team(ceo=[(R.ROLE_CEO, "Turn 1 of", ceo(stop=True))], evaluator=[(R.ROLE_EVALUATOR, ".", WRONG)])
    async with agent_stack(script) as env:
        result = await env.solve(two_plus_three("no-early-stop-1", max_turns=2))
        traj = await env.trajectory("no-early-stop-1")
        events = env.events["no-early-stop-1"]
    first, second = traj.decisions
    assert first.action == agents_pb2.CeoDecision.ACTION_CONTINUE and first.stop_set_aside
    assert not second.stop_set_aside
    ceo_prompts = [m.call.messages[1].content for m in traj.messages if m.role == R.ROLE_CEO]
    assert "stop" not in ceo_prompts[0].lower() and "Decision: continue\n" in ceo_prompts[0]
    assert "Decision: continue or stop" in ceo_prompts[1]
    assert any("stop set aside" in e.set_aside for e in events if e.type == "decision")
    assert result.extracted_answer == "5" and result.stop_reason == "max_turns"
    assert [m for m in traj.messages if m.turn == 1 and m.role == R.ROLE_SOLVER]  # the team did work


async def test_a_bare_critic_tag_is_asked_once_for_reasons(agent_stack):
    script = team(critic=[(R.ROLE_CRITIC, "without reasons", AGREE), (R.ROLE_CRITIC, ".", "[Agree]")])
    async with agent_stack(script) as env:
        result = await env.solve(two_plus_three("reask-1"))
        traj = await env.trajectory("reask-1")
    critics = [m for m in traj.messages if m.role == R.ROLE_CRITIC]
    for i in (0, 1):
        first, second = [m for m in critics if m.index == i]  # one question, one re-ask
        assert [m.role for m in second.call.messages] == ["system", "user", "assistant", "user"]
        assert second.call.messages[2].content == "[Agree]" and "without reasons" in second.call.messages[3].content
        assert not second.fallback and second.agree and "checked every step" in second.call.visible_text
    assert result.stop_reason == "accepted" and traj.format_ok


async def test_a_critic_that_stays_bare_is_counted_by_the_protocol_fallback(agent_stack):
    script = team(critic=[(R.ROLE_CRITIC, ".", "[Disagree]")])
    async with agent_stack(script) as env:
        result = await env.solve(two_plus_three("bare-1", max_turns=1))
        traj = await env.trajectory("bare-1")
    critics = [m for m in traj.messages if m.role == R.ROLE_CRITIC]
    assert len(critics) == 4  # two critics, each asked once more and no further
    assert all(m.agree for m in critics) and all(m.fallback for m in critics)
    assert "bare tag" in critics[-1].fallback_reason and result.consensus


async def test_a_malformed_second_turn_solution_keeps_the_first_turn_answer(agent_stack):
    script = team(
        ceo=[(R.ROLE_CEO, "Turn 2 of", ceo(n=2, direction="Recheck the sum from scratch."))],
        solver=[(R.ROLE_SOLVER, "Recheck the sum", "Rechecked, the result is \\boxed{answer}.")],
        evaluator=[(R.ROLE_EVALUATOR, ".", WRONG)],
    )
    async with agent_stack(script) as env:
        result = await env.solve(two_plus_three("keep-1", max_turns=2))
        traj = await env.trajectory("keep-1")
        events = env.events["keep-1"]
    turn2 = [m for m in traj.messages if m.turn == 2 and m.role == R.ROLE_SOLVER]
    assert turn2 and all(m.fallback for m in turn2)
    assert result.extracted_answer == "5" and result.correct == 1 and result.stop_reason == "max_turns"
    assert any(e.type == "plan_kept" for e in events)
    reviewed = [m for m in traj.messages if m.turn == 2 and m.role == R.ROLE_CRITIC]
    assert reviewed and all("\\boxed{5}" in m.call.messages[1].content for m in reviewed)
