"""One problem's run of the protocol (PROTOCOL.md "One turn"), resumable from its KV state.

decide → recruit → solve → (review → revise)* → execute → evaluate, turn after turn, until the
evaluator accepts, the CEO stops, the turns run out, the token ceiling or the deadline is reached.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.errors import KeyNotFoundError, NotFoundError
from nats.js.kv import KeyValue

from ceo import report as reports
from ceo import state as S
from ceo.decide import decide
from ceo.metrics import CeoMetrics
from ceo.profile import Profile
from ceo.state import ProblemState
from ceo.steps import StepRunner, task_id
from conclave.v1 import agents_pb2, outcome_pb2, problem_pb2
from services.agents import parsing
from services.agents.context import kind_name
from services.agents.llm import LlmClient, LlmError
from services.bus import subjects, topology
from services.bus.headers import MSG_ID
from services.bus.replies import publish_event, publish_result
from services.evaluation.graders import grade_choice, grade_math
from services.inference.ledger import Ledger

log = logging.getLogger(__name__)
R = agents_pb2
A = agents_pb2.CeoDecision


@dataclass
class RunConfig:
    step_timeout_s: float
    k_cap: int
    honour_stop: bool | None
    default_model: str
    # The paper's code asks critics one after another; we ask them concurrently unless this is set.
    serial_critics: bool = False


class ProblemRun:
    def __init__(self, *, nc: Client, js: JetStreamContext, kv: KeyValue, llm: LlmClient, metrics: CeoMetrics,
                 cfg: RunConfig, problem: problem_pb2.Problem, profile: Profile, reply_to: str, as_json: bool,
                 keepalive) -> None:
        self.nc, self.js, self.kv, self.llm, self.m, self.cfg = nc, js, kv, llm, metrics, cfg
        self.p, self.profile, self.reply_to, self.as_json = problem, profile, reply_to, as_json
        self.kind = kind_name(problem)
        self.keepalive = keepalive
        self.max_turns = problem.limits.max_turns or (1 if problem.single_agent else profile.max_turns)
        self.ceiling = problem.limits.max_total_tokens or profile.token_ceiling
        self.model = problem.model or cfg.default_model

    # ------------------------------------------------------------------ state and events
    async def load(self) -> ProblemState:
        try:
            entry = await self.kv.get(self.p.id)
            st = ProblemState.from_bytes(entry.value)
            self.resuming = True
            log.info("resuming problem at turn %d, phase %s", st.turn, st.phase)
            self.m.resumed.inc()
            return st
        except (KeyNotFoundError, NotFoundError):
            self.resuming = False
            return ProblemState(problem_id=self.p.id, n=self.profile.initial_n)

    async def save(self, st: ProblemState) -> None:
        await self.kv.put(self.p.id, st.to_bytes())
        await self.keepalive()

    async def event(self, st: ProblemState, type_: str, **fields) -> None:
        fields = {"turn": st.turn, "round": st.round, **fields}
        ev = outcome_pb2.ProgressEvent(problem_id=self.p.id, type=type_, t_s=time.time() - st.started_at, **fields)
        await publish_event(self.nc, ev, as_json=self.as_json)

    async def message_events(self, st: ProblemState, replies: list[agents_pb2.RoleReply]) -> None:
        for r in replies:
            tokens = sum(c.completion_tokens for c in r.calls)
            await self.event(st, "message", role=r.role, persona=r.persona, text=r.error or r.content, tokens=tokens,
                             agree=r.agree, fallback=r.fallback, fallback_reason=r.fallback_reason)

    def base_task(self, st: ProblemState, role: int, index: int = 0, **fields) -> agents_pb2.RoleTask:
        t = agents_pb2.RoleTask(
            task_id=task_id(self.p.id, st.turn, st.round, role, index), problem_id=self.p.id, role=role,
            problem=self.p, turn=st.turn, round=st.round, index=index, profile=self.profile.name,
            temperature=self.profile.temperature, top_p=self.profile.top_p, reasoning=self.profile.reasoning,
            tokens_used=st.tokens_used, token_ceiling=self.ceiling, max_turns=self.max_turns,
            parse_retries=self.profile.parse_retries, model=self.model,
        )
        for key, value in fields.items():
            if key == "memory":
                t.memory.extend(agents_pb2.MemoryLine(sender=s, content=c) for s, c in value)
            elif key == "execution":
                if value:
                    t.execution.CopyFrom(value)
            else:
                setattr(t, key, value)
        return t

    # ------------------------------------------------------------------ budget guard
    def would_cross_ceiling(self, st: ProblemState, calls: int, max_tokens: int) -> bool:
        if not self.ceiling:
            return False
        # Worst case of the next step: every call spends its whole budget on top of a prompt.
        prompt_estimate = (len(self.p.text) + len(st.plan)) // 3 + 200
        return st.tokens_used + calls * (max_tokens + prompt_estimate) > self.ceiling

    def out_of_time(self, st: ProblemState) -> bool:
        return bool(self.p.limits.deadline_s) and time.time() - st.started_at > self.p.limits.deadline_s

    def stop(self, st: ProblemState, reason: str, note: str = "") -> None:
        st.phase, st.stop_reason, st.stop_note = S.FINISH, reason, note

    # ------------------------------------------------------------------ the loop
    async def run(self) -> None:
        st = await self.load()
        if self.ceiling:
            # The gateway enforces the ceiling on every call of this problem from this ledger entry.
            await Ledger(self.js).open(self.p.id, self.ceiling)
        async with StepRunner(self.nc, self.js, self.p.id, self.cfg.step_timeout_s, resuming=self.resuming) as steps:
            while st.phase != S.FINISH:
                if self.out_of_time(st):
                    self.stop(st, "deadline", f"deadline of {self.p.limits.deadline_s:.0f}s passed")
                    break
                phase = st.phase
                try:
                    if self.p.single_agent:
                        await self.single_turn(st, steps)
                    else:
                        await getattr(self, f"_{phase}")(st, steps)
                except LlmError as exc:
                    if "ceiling" in str(exc).lower():
                        self.stop(st, "token_ceiling", str(exc))
                    else:
                        raise
                await self.save(st)
        await self.finish(st)

    async def _decide(self, st: ProblemState, steps: StepRunner) -> None:
        if st.turn > self.max_turns:
            self.stop(st, "max_turns", f"{self.max_turns} turns used")
            return
        if self.would_cross_ceiling(st, 1, self.profile.max_tokens_for("ceo")):
            self.stop(st, "token_ceiling", f"{st.tokens_used} of {self.ceiling} tokens used; no room for a decision")
            return
        decision, out = await decide(self.llm, self.p, self.profile, st, ceiling=self.ceiling,
                                     k_cap=self.cfg.k_cap, model=self.model)
        st.record_decision(decision, out.calls, out.fallback_reason)
        self.m.decisions.labels(A.Action.Name(decision.action).removeprefix("ACTION_").lower()).inc()
        if out.fallback:
            self.m.fallbacks.labels("ceo").inc()
        honour = self.profile.honour_stop if self.cfg.honour_stop is None else self.cfg.honour_stop
        set_aside = ""
        if decision.action == A.ACTION_STOP and not st.plan:
            set_aside = "stop set aside: there is no solution yet, so the team carries on"
        elif decision.action == A.ACTION_STOP and not honour:
            set_aside = "stop set aside: this deployment ignores the CEO's stop (honour_stop is off)"
        await self.event(st, "decision", role=R.ROLE_CEO, decision=decision, text=decision.direction,
                         fallback=out.fallback, fallback_reason=out.fallback_reason, set_aside=set_aside)
        if decision.action == A.ACTION_STOP and honour and st.plan:
            self.stop(st, "ceo_stop", "the CEO judged the latest solution final")
            return
        st.n, st.k, st.direction = decision.recruit_number, decision.max_tokens, decision.direction
        st.round, st.phase = 0, S.RECRUIT

    async def _recruit(self, st: ProblemState, steps: StepRunner) -> None:
        advice = st.evaluation.get("recruit_suggestion", "") or st.evaluation.get("advice", "")
        (reply,) = await steps.run([self.base_task(st, R.ROLE_RECRUITER, recruit_number=st.n, advice=advice)])
        st.record_reply(reply)
        experts = list(reply.experts) or [parsing.FALLBACK_EXPERTS[i % 5] for i in range(st.n)]
        st.experts = experts[: st.n]
        st.critic_memory = [[] for _ in range(st.n - 1)]  # critics start every turn with empty memory
        await self.event(st, "recruited", role=R.ROLE_RECRUITER, experts=st.experts,
                         fallback=reply.fallback or not reply.experts, fallback_reason=reply.fallback_reason or reply.error)
        if st.direction:
            st.solver_memory.append(("CEO", st.direction))
            for mem in st.critic_memory:
                mem.append(("CEO", st.direction))
        st.phase = S.SOLVE

    def solver_persona(self, st: ProblemState) -> str:
        return st.experts[0] if st.experts else "an expert problem solver"

    async def _solve(self, st: ProblemState, steps: StepRunner) -> None:
        await self._ask_solver(st, steps)
        st.round, st.phase = 1, S.REVIEW

    async def _ask_solver(self, st: ProblemState, steps: StepRunner) -> None:
        if self.would_cross_ceiling(st, 1, st.k):
            self.stop(st, "token_ceiling", f"{st.tokens_used} of {self.ceiling} tokens used; the next solution could cross it")
            return
        memory = st.solver_memory[-self.profile.solver_memory:]
        task = self.base_task(st, R.ROLE_SOLVER, persona=self.solver_persona(st), max_tokens=st.k,
                              direction=st.direction, memory=memory)
        reply = await self._new_plan(st, steps, task, self.solver_persona(st))
        if reply is not None:
            for mem in st.critic_memory:
                mem.append((self.solver_persona(st), reply.content))

    async def _new_plan(self, st: ProblemState, steps: StepRunner, task: agents_pb2.RoleTask,
                        sender: str) -> agents_pb2.RoleReply | None:
        """Runs a solver-like task; its answer becomes the plan and joins the solver's memory."""
        (reply,) = await steps.run([task])
        st.record_reply(reply)
        await self.message_events(st, [reply])
        if reply.error:
            self.fail_step(st, reply)
            return None
        st.plan, st.plan_turn = reply.content, st.turn
        st.solver_memory.append((sender, reply.content))
        return reply

    async def _review(self, st: ProblemState, steps: StepRunner) -> None:
        critics = st.experts[1:] or ["a careful reviewer"]
        if self.would_cross_ceiling(st, len(critics), st.k):
            self.stop(st, "token_ceiling", f"{st.tokens_used} of {self.ceiling} tokens used; a review round could cross it")
            return
        tasks = [
            self.base_task(st, R.ROLE_CRITIC, i, persona=persona, max_tokens=st.k, solution=st.plan,
                           direction=st.direction, memory=st.critic_memory[i][-self.profile.critic_memory:])
            for i, persona in enumerate(critics)
        ]
        if self.cfg.serial_critics:
            replies = [(await steps.run([t]))[0] for t in tasks]
        else:
            replies = await steps.run(tasks)  # the critics of one round run concurrently
        for r in replies:
            st.record_reply(r)
        await self.message_events(st, replies)
        objections = []
        for i, r in enumerate(replies):
            if r.error:
                continue  # a critic that could not answer raises no objection, as a fallback critic would
            st.critic_memory[i].append((critics[i], r.content))
            if not r.agree:
                objections.append((critics[i], r.content))
        if not objections:
            st.consensus.append(True)
            by_fallback = sum(1 for r in replies if r.fallback or r.error)
            note = f" ({by_fallback} counted as agreeing by fallback)" if by_fallback else ""
            await self.event(st, "consensus", text=f"all {len(replies)} critics agree{note}")
            st.phase = S.EXECUTE
        elif st.round >= self.profile.critic_rounds:
            st.consensus.append(False)
            st.phase = S.EXECUTE
        else:
            st.pending_reviews = objections
            st.phase = S.REVISE

    async def _revise(self, st: ProblemState, steps: StepRunner) -> None:
        st.solver_memory.extend(st.pending_reviews)
        st.pending_reviews = []
        await self._ask_solver(st, steps)
        if st.phase == S.REVISE:
            st.round += 1
            st.phase = S.REVIEW

    async def _execute(self, st: ProblemState, steps: StepRunner) -> None:
        if self.profile.executor == "tests" and self.kind == "code":
            (reply,) = await steps.run([self.base_task(st, R.ROLE_EXECUTOR, solution=st.plan)])
            st.record_reply(reply)
            if not reply.error:
                st.execution = {"passed": reply.execution.passed, "status": reply.execution.status,
                                "dataset_tests": reply.execution.dataset_tests}
                st.execution_plan = st.plan
                st.append(outcome_pb2.Trajectory(executions=[reply.execution]))
                await self.event(st, "execution", role=R.ROLE_EXECUTOR, execution=reply.execution,
                                 text=reply.execution.status)
        st.phase = S.EVALUATE

    async def _evaluate(self, st: ProblemState, steps: StepRunner) -> None:
        execution = None
        if st.execution and st.execution_plan == st.plan:
            execution = agents_pb2.ExecutionResult(passed=st.execution["passed"], status=st.execution["status"],
                                                   dataset_tests=st.execution["dataset_tests"])
        (reply,) = await steps.run([self.base_task(st, R.ROLE_EVALUATOR, solution=st.plan, execution=execution)])
        st.record_reply(reply)
        ev = reply.evaluation if not reply.error else agents_pb2.Evaluation(correctness=0, fallback=True)
        st.evaluation = {"correctness": ev.correctness, "advice": ev.advice, "recruit_suggestion": ev.recruit_suggestion}
        st.append(outcome_pb2.Trajectory(evaluations=[ev]))
        await self.event(st, "evaluation", role=R.ROLE_EVALUATOR, evaluation=ev, text=ev.advice,
                         fallback=ev.fallback, fallback_reason=reply.fallback_reason or reply.error)
        gaps = "; ".join(reports.parse(st.plan).problems) if self.profile.structured_report else ""
        if gaps:  # the next turn's CEO and solver learn what the report lacks, whatever the evaluator said
            st.evaluation.update(correctness=0, advice=f"Complete the report: {gaps}. {ev.advice}".strip())
        if ev.correctness == 1 and gaps:
            self.m.reports_rejected.inc()
            await self.event(st, "evaluation", role=R.ROLE_EVALUATOR,
                             text=f"not accepted: the evaluator said correct, but the report is incomplete ({gaps})")
        elif ev.correctness == 1 and self.profile.require_passing_tests and execution is not None \
                and not execution.passed:
            self.m.overruled.inc()
            await self.event(st, "evaluation", role=R.ROLE_EXECUTOR,
                             text=f"not accepted: the evaluator said correct, but the tests failed ({execution.status})")
        elif ev.correctness == 1:
            self.stop(st, "accepted", "the evaluator accepted the solution")
            return
        st.turn += 1
        st.phase = S.DECIDE

    async def single_turn(self, st: ProblemState, steps: StepRunner) -> None:
        if st.turn > self.max_turns:
            self.stop(st, "max_turns", f"{self.max_turns} turns used")
            return
        k = min(self.cfg.k_cap or max(self.profile.budget_menu), max(self.profile.budget_menu))
        if self.would_cross_ceiling(st, 1, k):
            self.stop(st, "token_ceiling", f"{st.tokens_used} of {self.ceiling} tokens used")
            return
        task = self.base_task(st, R.ROLE_SINGLE, max_tokens=k, memory=st.solver_memory[-self.profile.solver_memory:])
        if await self._new_plan(st, steps, task, "assistant") is not None:
            st.turn += 1

    def fail_step(self, st: ProblemState, reply: agents_pb2.RoleReply) -> None:
        role = R.Role.Name(reply.role)
        if "ceiling" in reply.error.lower():
            self.stop(st, "token_ceiling", f"{role}: {reply.error}")
        else:
            self.stop(st, "error", f"{role} failed: {reply.error}")

    # ------------------------------------------------------------------ the end
    def grade(self, extracted: str, st: ProblemState) -> int:
        if self.kind == "code":
            if st.execution and st.execution_plan == st.plan and st.execution.get("dataset_tests"):
                return 1 if st.execution["passed"] else 0
            return -1
        if not self.p.reference_answer:
            return -1
        if self.kind == "math":
            return int(grade_math(st.plan, self.p.reference_answer))
        if self.kind == "multiple_choice":
            return int(grade_choice(st.plan, self.p.reference_answer))
        return -1

    async def finish(self, st: ProblemState) -> None:
        result_subject = subjects.result(self.p.id)
        try:
            await self.js.get_last_msg(topology.RESULTS.name, result_subject)
            already = True
        except NotFoundError:
            already = False
        if st.published and already:
            return
        extracted = parsing.extract_answer(st.plan, self.kind) if st.plan else ""
        result = outcome_pb2.Result(
            problem_id=self.p.id, status="error" if st.stop_reason == "error" else "ok", answer=st.plan,
            extracted_answer=extracted, turns=min(st.turn, self.max_turns), total_tokens=st.tokens_used,
            wall_s=time.time() - st.started_at, stop_reason=st.stop_reason, correct=self.grade(extracted, st),
            consensus=bool(st.consensus) and all(st.consensus), metadata=dict(self.p.metadata),
            profile=self.profile.name, single_agent=self.p.single_agent, fallbacks=st.fallbacks,
            stop_detail=st.stop_note,
        )
        if self.profile.structured_report and st.plan:
            result.report.CopyFrom(reports.parse(st.plan))
        if st.stop_reason == "error":
            result.error.CopyFrom(outcome_pb2.Error(code="step_failed", message=st.stop_note, problem_id=self.p.id))
        for role, (prompt, completion, calls) in sorted(st.tokens.items()):
            result.tokens.add(role=R.Role.Value(role), prompt_tokens=prompt, completion_tokens=completion, calls=calls)
        traj = st.trajectory()
        traj.problem.CopyFrom(self.p)
        traj.result.CopyFrom(result)
        traj.consensus = result.consensus
        traj.format_ok = st.fallbacks == 0
        if not already:
            # Trajectory first: a crash between the two re-publishes it (deduplicated), never loses it.
            await self.js.publish(subjects.trajectory(self.p.id), traj.SerializeToString(),
                                  headers={MSG_ID: f"trajectory:{self.p.id}"})
            await publish_result(self.nc, self.js, result, reply_to=self.reply_to, as_json=self.as_json)
            # The done event counts turns as the Result does (st.turn may already point at the next one).
            await self.event(st, "done", text=f"{st.stop_reason}: {st.stop_note}", turn=result.turns)
            self.m.finished.labels(st.stop_reason or "unknown").inc()
            self.m.seconds.observe(result.wall_s)
            self.m.turns.observe(result.turns)
            log.info("problem done", extra={"stop_reason": st.stop_reason, "tokens": st.tokens_used})
        st.published = True
        await self.kv.put(self.p.id, st.to_bytes())
