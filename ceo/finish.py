"""The end of a problem's run (ceo/loop.py): grade the last plan, then publish its trajectory and its result
exactly once, answer the publisher, and count the outcome."""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

from ceo import answer_vote
from ceo import report as reports
from ceo.state import ProblemState
from conclave.v1 import agents_pb2, outcome_pb2
from services.bus import subjects, topology
from services.bus.headers import MSG_ID
from services.bus.lookup import last_message
from services.bus.replies import RESULT_KEY, answer, store_result
from services.bus.retry import retrying
from services.evaluation.graders import grade_choice
from services.evaluation.vote import rule_name
from services.protocol.answers import extract_answer
from services.runtime import tracing

if TYPE_CHECKING:
    from ceo.loop import ProblemRun

log = logging.getLogger(__name__)


async def grade(run: ProblemRun, extracted: str, st: ProblemState) -> int:
    """1 or 0 against the reference (code: the dataset's tests as the executor ran them), -1 ungraded."""
    if run.kind == "code":
        if st.execution and st.execution_plan == st.plan and st.execution.get("dataset_tests"):
            return 1 if st.execution["passed"] else 0
        return -1
    if not run.problem.reference_answer:
        return -1
    if run.kind == "math":
        return await run.grader.grade(st.plan, run.problem.reference_answer)
    if run.kind == "multiple_choice":
        return int(grade_choice(st.plan, run.problem.reference_answer))
    return -1


async def result_stored(run: ProblemRun) -> bool:
    """Whether this problem's result is in RESULTS: only a message under its own key counts, so
    nothing another publisher put on the subject can stand in for it (or suppress it)."""
    raw = await last_message(run.js, topology.RESULTS, subjects.result(run.problem.id), leader=True)
    return raw is not None and (raw.headers or {}).get(MSG_ID) == RESULT_KEY.format(problem_id=run.problem.id)


async def finish(run: ProblemRun, st: ProblemState) -> None:
    """Grades the last plan and publishes the trajectory, then the result, once: a resumed run that finds
    its result stored publishes nothing again."""
    # Only a problem that ran before (its state was stored) can have a stored result: a fresh one skips
    # the look-up's round trip.
    already = await retrying(lambda: result_stored(run), "look up the result", give_up_s=run.step_timeout_s) \
        if run.resuming or st.published else False
    if st.published and already:
        await run.saved()
        return
    # final_answer: vote profiles answer with the majority of the team's answers and computed values.
    vote = answer_vote.decide_final(st, run.kind, run.profile) if st.stop_reason != "error" else None
    extracted = extract_answer(st.plan, run.kind) if st.plan else ""
    result = outcome_pb2.Result(
        problem_id=run.problem.id, status="error" if st.stop_reason == "error" else "ok", answer=st.plan,
        extracted_answer=extracted, turns=min(st.turn, run.max_turns), total_tokens=st.tokens_used,
        wall_s=time.time() - st.started_at, stop_reason=st.stop_reason, correct=await grade(run, extracted, st),
        consensus=bool(st.consensus) and all(st.consensus), metadata=dict(run.problem.metadata),
        profile=run.profile.name, single_agent=run.problem.single_agent, fallbacks=st.fallbacks,
        stop_detail=st.stop_note, trace_id=tracing.trace_id_of(),
    )
    tracing.set_outcome(tracing.current_span(), st.stop_reason, error=st.stop_reason == "error",
                        tokens=st.tokens_used, turns=result.turns)
    if run.profile.structured_report and st.plan:
        result.report.CopyFrom(reports.parse(st.plan))
    if st.stop_reason == "error":
        result.error.CopyFrom(outcome_pb2.Error(code="step_failed", message=st.stop_note, problem_id=run.problem.id))
    for role, (prompt, completion, calls) in sorted(st.tokens.items()):
        result.tokens.add(role=agents_pb2.Role.Value(role), prompt_tokens=prompt, completion_tokens=completion, calls=calls)
    traj = st.trajectory()
    traj.problem.CopyFrom(run.problem)
    traj.result.CopyFrom(result)
    traj.consensus = result.consensus
    traj.format_ok = st.fallbacks == 0
    traj.trace_id = result.trace_id
    if vote is not None:
        traj.answer_vote.CopyFrom(vote)
    if not already:
        # Trajectory first: a crash between the two re-publishes it (deduplicated), never loses it.
        give_up = run.step_timeout_s
        await retrying(lambda: run.js.publish(subjects.trajectory(run.problem.id), traj.SerializeToString(),
                                               headers={MSG_ID: f"trajectory:{run.problem.id}"}),
                       "publish the trajectory", give_up_s=give_up)
        attempts = 0

        async def store_once() -> None:
            nonlocal attempts
            attempts += 1
            # A retry looks first: if the last attempt was stored and only its PubAck was lost,
            # publishing again would reach live subscribers twice (the store deduplicates by key).
            if attempts == 1 or not await result_stored(run):
                await store_result(run.js, result, as_json=run.as_json)

        await retrying(store_once, "publish the result", give_up_s=give_up)
        if run.reply_to:
            await answer(run.nc, run.reply_to, result, as_json=run.as_json, keyed=True)
        if vote is not None:
            run.metrics.final_votes.labels(rule_name(vote.rule), str(vote.changed).lower()).inc()
            await run.event(st, "final_vote", text=answer_vote.describe(vote), turn=result.turns)
        # The done event counts turns as the Result does (st.turn may already point at the next one).
        await run.event(st, "done", text=f"{st.stop_reason}: {st.stop_note}", turn=result.turns)
        run.metrics.finished.labels(st.stop_reason or "unknown").inc()
        run.metrics.seconds.observe(result.wall_s)
        run.metrics.turns.observe(result.turns)
        run.metrics.consensus.labels(str(result.consensus).lower()).inc()
        log.info("problem done", extra={"stop_reason": st.stop_reason, "tokens": st.tokens_used})
    st.published = True
    # The steps' writes first (an older state must not land over this one), less the one this replaces.
    await run.saved(superseded=True)
    await retrying(lambda: run.kv.put(run.problem.id, st.to_bytes()), "save problem state",
                   give_up_s=run.step_timeout_s)
