"""The CEO's own model call before each turn: continue or stop, team size N, direction, budget K."""

from __future__ import annotations

from ceo.state import ProblemState
from conclave.v1 import agents_pb2
from services.inference.client import CallOptions, LlmClient
from services.protocol import parsing
from services.protocol.calling import StepOutcome, call_and_parse
from services.protocol.context import problem_text
from services.protocol.profile import Profile, cut_menu

A = agents_pb2.CeoDecision


def budget_menu(profile: Profile, k_cap: int) -> tuple[int, ...]:
    """The profile's menu, cut to what this deployment's pods can serve (k_cap=0: no cut)."""
    return cut_menu(profile.budget_menu, k_cap)


async def decide(
    llm: LlmClient, problem, profile: Profile, st: ProblemState, *, ceiling: int, k_cap: int, model: str,
    timeout_s: float,
) -> tuple[agents_pb2.CeoDecision, StepOutcome]:
    """The decision, parsed (retried up to the profile's parse_retries), else the protocol's fallback.
    The model call may take `timeout_s` (its gRPC deadline); an LlmError reaches the caller."""
    menu = budget_menu(profile, k_cap)
    # Before the first solution there is nothing to stop with, and while the latest check contradicts the
    # solution there is nothing sound to stop with: stop is not offered, and one said anyway is read as
    # continue (decision.stop_set_aside), not acted on.
    has_solution = bool(st.plan)
    offer_stop = has_solution and not st.plan_contradicted
    feedback = st.evaluation.get("advice", "") if st.evaluation else ""
    if st.evaluation:
        feedback = profile.fragment("ceo_feedback", advice=feedback,
                                    verdict="correct" if st.evaluation.get("correctness") else "not correct")
    with_solution = "with_solution" if offer_stop else "contradicted" if has_solution else "without_solution"
    messages = profile.prompt("ceo").render(
        problem=problem_text(problem), turn=st.turn, max_turns=profile.max_turns,
        solution=st.plan or "(none yet)", feedback=feedback or "(none yet)", tokens_used=st.tokens_used,
        ceiling_note=" " + profile.fragment("ceo_ceiling_note", ceiling=ceiling) if ceiling else "",
        n_min=profile.n_min, n_max=profile.n_cap, budget_menu=", ".join(str(k) for k in menu),
        decision_options=profile.fragment(f"ceo_options_{with_solution}"),
        stop_rule=profile.fragment(f"ceo_stop_rule_{with_solution}"),
    )
    opts = CallOptions(max_tokens=profile.max_tokens_for("ceo"), timeout_s=timeout_s, temperature=profile.temperature,
                       top_p=profile.top_p, session_key=st.problem_id,
                       ledger_key=st.problem_id if ceiling else "", role=agents_pb2.ROLE_CEO, model=model)
    out = await call_and_parse(
        llm, messages, opts,
        lambda text: parsing.parse_decision(text, n_min=profile.n_min, n_cap=profile.n_cap, menu=menu,
                                            allow_stop=offer_stop),
        retries=profile.parse_retries, key=f"{st.problem_id}/t{st.turn}-ceo",
    )
    if out.value is not None:
        d = out.value
        decision = A(action=A.ACTION_STOP if d.stop else A.ACTION_CONTINUE, recruit_number=d.recruit_number,
                     direction=d.direction, max_tokens=d.max_tokens, turn=st.turn, stop_set_aside=d.stop_set_aside)
    else:
        # PROTOCOL.md: continue with the starting team (N=2 in every paper profile) and the largest budget.
        decision = A(action=A.ACTION_CONTINUE, recruit_number=profile.initial_n, direction="",
                     max_tokens=max(menu), turn=st.turn, fallback=True)
    return decision, out
