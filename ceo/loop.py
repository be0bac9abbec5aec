"""One problem's run of the protocol (PROTOCOL.md "One turn"), resumable from its KV state.

decide → recruit → solve → (review → revise)* → execute → evaluate, turn after turn, until the
evaluator accepts, the CEO stops, the turns run out, the token ceiling or the deadline is reached.
Each step waits at most step_timeout_s for its replies (ceo/steps.py); a failed step ends the problem with
stop_reason error, a call refused for the ceiling (FailureReason, never the message text) with
token_ceiling. The end of the run, grading and publishing the result, is ceo/finish.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass

from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.errors import KeyNotFoundError, NotFoundError
from nats.js.kv import KeyValue

from ceo import answer_vote
from ceo import report as reports
from ceo.decide import decide
from ceo.finish import finish
from ceo.grading import MathGrader
from ceo.metrics import CeoMetrics
from ceo.spans import TurnSpans
from ceo.state import DECIDE, EVALUATE, EXECUTE, FINISH, RECRUIT, REVIEW, REVISE, SOLVE, ProblemState
from ceo.steps import StepRunner, StepTiming, task_id
from conclave.v1 import agents_pb2, outcome_pb2, problem_pb2
from services.bus.replies import publish_event
from services.bus.retry import retrying
from services.inference import failures
from services.inference.client import LlmClient, LlmError
from services.inference.ledger import Ledger
from services.protocol import answers, parsing
from services.protocol.context import evaluator_note
from services.protocol.kinds import kind_name
from services.protocol.profile import Profile

log = logging.getLogger(__name__)
# The ExecutionResult fields a problem's state keeps (as a dict in KV) and gives back to the evaluator.
_EXECUTION_FIELDS = ("passed", "status", "dataset_tests", "kind", "output", "tests_run", "tests_failed",
                     "check_answer", "contradicts")
CeoDecision = agents_pb2.CeoDecision


@dataclass
class RunConfig:
    step: StepTiming
    k_cap: int
    honour_stop: bool | None
    default_model: str
    # The gRPC deadline of the CEO's own model call (RuntimeSettings.model_call_timeout_s).
    model_call_timeout_s: float
    # The paper's code asks critics one after another; we ask them concurrently unless this is set.
    serial_critics: bool = False
    # The operator maximum of a problem's token ceiling (services/intake/validate.py Limits).
    max_total_tokens: int = 0


class ProblemRun:
    def __init__(self, *, nc: Client, js: JetStreamContext, kv: KeyValue, llm: LlmClient, metrics: CeoMetrics,
                 cfg: RunConfig, problem: problem_pb2.Problem, profile: Profile, reply_to: str, as_json: bool,
                 keepalive, grader: MathGrader) -> None:
        self.nc, self.js, self.kv, self.llm, self.metrics, self.cfg = nc, js, kv, llm, metrics, cfg
        self.problem, self.profile, self.reply_to, self.as_json = problem, profile, reply_to, as_json
        self.kind = kind_name(problem)
        self.keepalive = keepalive
        self.grader = grader
        self.max_turns = problem.limits.max_turns or (1 if problem.single_agent else profile.max_turns)
        self.ceiling = problem.limits.max_total_tokens or profile.token_ceiling
        if cfg.max_total_tokens:
            self.ceiling = min(self.ceiling, cfg.max_total_tokens)
        self.model = problem.model or cfg.default_model
        # How long each step waits for its replies (CeoSettings.step_timeout_s): past it, a missing reply
        # becomes an error reply (FAILURE_REASON_TIMEOUT) and the problem ends as a failed step. Bus
        # operations (state saves, the ledger, the result) ride out a NATS outage for as long.
        self.step_timeout_s = cfg.step.timeout_s
        # The state `save` recorded and not yet sent, and the write in flight (`write_saved_state`).
        self._unsaved: bytes | None = None
        self._saving: asyncio.Task[None] | None = None

    # ------------------------------------------------------------------ state and events
    async def load(self) -> ProblemState:
        try:
            entry = await self.kv.get(self.problem.id)
            st = ProblemState.from_bytes(entry.value)
            self.resuming = True
            log.info("resuming problem at turn %d, phase %s", st.turn, st.phase)
            self.metrics.resumed.inc()
            return st
        except (KeyNotFoundError, NotFoundError):
            self.resuming = False
            return ProblemState(problem_id=self.problem.id, n=self.profile.initial_n)

    def save(self, st: ProblemState) -> None:
        """Records the state of a completed step for KV, without holding up the next step: it is written
        once the next step's tasks are out (`write_saved_state`, called by the StepRunner), not before
        them (a round trip of every step's critical path otherwise); a newer state recorded before that
        replaces it. Writes go one after another, so an older state never lands over a newer one. A crash
        before a state lands resumes from an earlier step, whose replies (and those of the steps after
        it) are read back from REPLIES (ceo/steps.py), so nothing is asked twice and the replay reaches
        the same state; only the CEO's own decision has no such record, so `run` waits for its save. A
        write that fails for good fails the run at the next save, or before the final one (`saved`)."""
        previous = self._saving
        if previous is not None and previous.done():
            previous.result()  # a failed save fails the run here, as an awaited one would have
        self._unsaved = st.to_bytes()  # this step's state, whatever the next step changes meanwhile

    def write_saved_state(self) -> None:
        """Starts writing the state `save` recorded (after the write before it), if any."""
        if self._unsaved is None:
            return
        data, self._unsaved = self._unsaved, None
        self._saving = asyncio.get_running_loop().create_task(self._write_state(self._saving, data))

    async def _write_state(self, previous: asyncio.Task[None] | None, data: bytes) -> None:
        if previous is not None:
            await previous
        # Rides out a NATS restart: failing here would retry the whole message after its BackOff.
        await retrying(lambda: self.kv.put(self.problem.id, data), "save problem state",
                       give_up_s=self.step_timeout_s)
        with contextlib.suppress(Exception):
            await self.keepalive()

    async def saved(self, *, superseded: bool = False) -> None:
        """Writes the recorded state now (or drops it, when the caller writes a newer one next) and waits
        until every write so far is done (raises the error of one that failed)."""
        if superseded:
            self._unsaved = None
        self.write_saved_state()
        if self._saving is not None:
            await self._saving

    async def _abandon_saves(self) -> None:
        """The run failed: a save still in flight is cancelled (the redelivered run resumes from what was
        written, which is safe: see `save`), and its error, if any, is not left unretrieved."""
        self._unsaved = None
        if self._saving is not None:
            self._saving.cancel()
            await asyncio.gather(self._saving, return_exceptions=True)

    async def event(self, st: ProblemState, type_: str, **fields) -> None:
        fields = {"turn": st.turn, "round": st.round, **fields}
        ev = outcome_pb2.ProgressEvent(problem_id=self.problem.id, type=type_, t_s=time.time() - st.started_at, **fields)
        await publish_event(self.nc, ev, as_json=self.as_json)

    async def message_events(self, st: ProblemState, replies: list[agents_pb2.RoleReply]) -> None:
        for r in replies:
            tokens = sum(c.completion_tokens for c in r.calls)
            await self.event(st, "message", role=r.role, persona=r.persona, text=r.error or r.content, tokens=tokens,
                             agree=r.agree, fallback=r.fallback, fallback_reason=r.fallback_reason)

    def base_task(self, st: ProblemState, role: int, index: int = 0, **fields) -> agents_pb2.RoleTask:
        t = agents_pb2.RoleTask(
            task_id=task_id(self.problem.id, st.turn, st.round, role, index), problem_id=self.problem.id, role=role,
            problem=self.problem, turn=st.turn, round=st.round, index=index, profile=self.profile.name,
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
        prompt_estimate = (len(self.problem.text) + len(st.plan)) // 3 + 200
        return st.tokens_used + calls * (max_tokens + prompt_estimate) > self.ceiling

    def out_of_time(self, st: ProblemState) -> bool:
        return bool(self.problem.limits.deadline_s) and time.time() - st.started_at > self.problem.limits.deadline_s

    def stop(self, st: ProblemState, reason: str, note: str = "") -> None:
        st.phase, st.stop_reason, st.stop_note = FINISH, reason, note

    # ------------------------------------------------------------------ the loop
    async def run(self) -> None:
        try:
            await self._run()
        except BaseException:
            await self._abandon_saves()
            raise

    async def _run(self) -> None:
        # The state and the ledger entry are independent: both round trips at once. `open` creates the
        # entry of a fresh problem and sets the ceiling of a resumed one's.
        opening = [retrying(lambda: Ledger(self.js).open(self.problem.id, self.ceiling), "open token ledger",
                            give_up_s=self.step_timeout_s)] if self.ceiling else []
        # The gateway enforces the ceiling on every call of this problem from this ledger entry.
        st, *_ = await asyncio.gather(self.load(), *opening)
        unavailable_since = 0.0
        async with StepRunner(self.nc, self.js, self.problem.id, self.cfg.step, resuming=self.resuming,
                              metrics=self.metrics, published=self.write_saved_state) as steps, TurnSpans() as spans:
            while st.phase != FINISH:
                if self.out_of_time(st):
                    self.stop(st, "deadline", f"deadline of {self.problem.limits.deadline_s:.0f}s passed")
                    break
                phase = st.phase
                try:
                    with spans.phase(st.turn, st.round, "single" if self.problem.single_agent else phase):
                        if self.problem.single_agent:
                            await self.single_turn(st, steps)
                        else:
                            await getattr(self, f"_{phase}")(st, steps)
                except LlmError as exc:
                    if exc.reason in failures.OUT_OF_TOKENS:
                        self.stop(st, "token_ceiling", str(exc))
                    elif exc.reason == agents_pb2.FAILURE_REASON_POD_UNAVAILABLE and st.phase == phase:
                        # The gateway (or its ledger, during a NATS restart) is back soon: repeat the phase
                        # here rather than fail the message into its BackOff.
                        unavailable_since = unavailable_since or time.monotonic()
                        if time.monotonic() - unavailable_since > self.cfg.step.timeout_s:
                            raise
                        self.metrics.transient_retries.labels("model_call").inc()
                        log.warning("model call unavailable, repeating the %s phase: %s", phase, exc)
                        await asyncio.sleep(1.0)
                        continue
                    else:
                        raise
                unavailable_since = 0.0
                self.save(st)
                if phase == DECIDE and not self.problem.single_agent:
                    # The CEO's own decision is the one outcome no store holds (a role's reply is in
                    # REPLIES): it must be written before the steps it shapes leave, or a crash could
                    # decide again, differently, under tasks already sent.
                    await self.saved()
        await finish(self, st)

    async def _decide(self, st: ProblemState, steps: StepRunner) -> None:
        if st.turn > self.max_turns:
            self.stop(st, "max_turns", f"{self.max_turns} turns used")
            return
        if self.would_cross_ceiling(st, 1, self.profile.max_tokens_for("ceo")):
            self.stop(st, "token_ceiling", f"{st.tokens_used} of {self.ceiling} tokens used; no room for a decision")
            return
        decision, out = await decide(self.llm, self.problem, self.profile, st, ceiling=self.ceiling,
                                     k_cap=self.cfg.k_cap, model=self.model,
                                     timeout_s=self.cfg.model_call_timeout_s)
        st.record_decision(decision, out.calls, out.fallback_reason)
        self.metrics.decisions.labels(CeoDecision.Action.Name(decision.action).removeprefix("ACTION_").lower()).inc()
        self.metrics.team_size.observe(decision.recruit_number)
        self.metrics.budget.observe(decision.max_tokens)
        if out.fallback:
            self.metrics.fallbacks.labels("ceo").inc()
        honour = self.profile.honour_stop if self.cfg.honour_stop is None else self.cfg.honour_stop
        set_aside = ""
        if decision.stop_set_aside or (decision.action == CeoDecision.ACTION_STOP and not st.plan):
            self.metrics.decisions.labels("stop_set_aside").inc()
            why = "the latest check contradicts the solution" if st.plan else "there is no solution yet"
            log.info("the CEO said stop, but %s; set aside, the team continues", why)
            set_aside = f"stop set aside: {why}, so the team carries on"
        elif decision.action == CeoDecision.ACTION_STOP and not honour:
            set_aside = "stop set aside: this deployment ignores the CEO's stop (honour_stop is off)"
        await self.event(st, "decision", role=agents_pb2.ROLE_CEO, decision=decision, text=decision.direction,
                         fallback=out.fallback, fallback_reason=out.fallback_reason, set_aside=set_aside)
        if decision.action == CeoDecision.ACTION_STOP and honour and st.plan:
            self.stop(st, "ceo_stop", "the CEO judged the latest solution final")
            return
        st.n, st.k, st.direction = decision.recruit_number, decision.max_tokens, decision.direction
        st.round, st.phase = 0, RECRUIT

    async def _recruit(self, st: ProblemState, steps: StepRunner) -> None:
        if self.profile.neutral_personas:
            # The neutral-persona ablation: no recruiter call, the generic personas of the prompt set.
            experts = [self.profile.fragment("solver_persona")] + [self.profile.fragment("critic_persona")] * (st.n - 1)
        else:
            advice = st.evaluation.get("recruit_suggestion", "") or st.evaluation.get("advice", "")
            task = self.base_task(st, agents_pb2.ROLE_RECRUITER, recruit_number=st.n, advice=advice)
            (reply,) = await steps.run([task], timeout_s=self.step_timeout_s)
            st.record_reply(reply)
            experts = list(reply.experts) or [parsing.FALLBACK_EXPERTS[i % 5] for i in range(st.n)]
        st.experts = experts[: st.n]
        st.critic_memory = [[] for _ in range(st.n - 1)]  # critics start every turn with empty memory
        if self.profile.neutral_personas:
            await self.event(st, "recruited", role=agents_pb2.ROLE_RECRUITER, experts=st.experts)
        else:
            await self.event(st, "recruited", role=agents_pb2.ROLE_RECRUITER, experts=st.experts,
                             fallback=reply.fallback or not reply.experts,
                             fallback_reason=reply.fallback_reason or reply.error)
        # The last turn's check of this solution: the critics hear what the evaluator heard (the solver is
        # shown it in its own prompt, _ask_solver).
        checked = self.check_note(st)
        if st.direction and self.profile.solver_sees_direction:
            st.solver_memory.append(("CEO", st.direction))
        for mem in st.critic_memory:
            mem.extend([("executor", checked)] if checked else [])
            mem.extend([("CEO", st.direction)] if st.direction else [])
        st.phase = SOLVE

    def check_note(self, st: ProblemState) -> str:
        """The outcome of the check that ran on the current plan, for the next turn's critics ('' if none)."""
        if not st.check_of_plan():
            return ""
        return evaluator_note(self.profile, self.execution_of(st), answers.extract_answer(st.plan, self.kind)).strip()

    def latest_check(self, st: ProblemState) -> dict:
        """The latest check and the solution it ran on, for the solver's task: a revision sees what the
        check computed and its verdict, not only the critics' words ({} without a check)."""
        if st.execution.get("kind") != "check" or not st.execution_plan:
            return {}
        return {"execution": self.execution_of(st), "solution": st.execution_plan}

    def solver_persona(self, st: ProblemState) -> str:
        return st.experts[0] if st.experts else self.profile.fragment("solver_persona")

    async def _solve(self, st: ProblemState, steps: StepRunner) -> None:
        await self._ask_solver(st, steps)
        st.round, st.phase = 1, REVIEW

    async def _ask_solver(self, st: ProblemState, steps: StepRunner) -> None:
        first_draft_as_single = self.profile.first_draft == "single" and not st.plan
        k = self.single_budget() if first_draft_as_single else st.k
        if self.would_cross_ceiling(st, 1, k):
            self.stop(st, "token_ceiling", f"{st.tokens_used} of {self.ceiling} tokens used; the next solution could cross it")
            return
        if first_draft_as_single:
            # The single agent's question, nothing of the team: no persona, direction or memory.
            task = self.base_task(st, agents_pb2.ROLE_SOLVER, max_tokens=k, as_single_agent=True)
        else:
            memory = st.solver_memory[-self.profile.solver_memory:]
            direction = st.direction if self.profile.solver_sees_direction else ""
            task = self.base_task(st, agents_pb2.ROLE_SOLVER, persona=self.solver_persona(st), max_tokens=k,
                                  direction=direction, memory=memory, **self.latest_check(st))
        reply = await self._new_plan(st, steps, task, self.solver_persona(st))
        if reply is not None and reply.content == st.plan:
            for mem in st.critic_memory:
                mem.append((self.solver_persona(st), reply.content))

    async def _new_plan(self, st: ProblemState, steps: StepRunner, task: agents_pb2.RoleTask,
                        sender: str) -> agents_pb2.RoleReply | None:
        """Runs a solver-like task; its answer becomes the plan and joins the solver's memory."""
        (reply,) = await steps.run([task], timeout_s=self.step_timeout_s)
        st.record_reply(reply)
        await self.message_events(st, [reply])
        if reply.error:
            self.fail_step(st, reply)
            return None
        if reply.fallback and st.plan:
            # A reply without the required answer (no \boxed{}, a placeholder, the direction copied) does
            # not replace a solution that had one: a malformed second turn must not lose turn 1's answer.
            log.info("the new solution is malformed (%s); the previous one stays", reply.fallback_reason)
            await self.event(st, "plan_kept", role=reply.role,
                             text=f"kept the previous solution: the new one is malformed ({reply.fallback_reason})")
            return reply
        st.plan, st.plan_turn = reply.content, st.turn
        st.solver_memory.append((sender, reply.content))
        if self.profile.final_answer == "vote":
            answer_vote.note_solution(st, self.kind, reply.content, st.turn, st.round)
        return reply

    async def _review(self, st: ProblemState, steps: StepRunner) -> None:
        critics = st.experts[1:] or [self.profile.fragment("critic_persona")]
        if self.would_cross_ceiling(st, len(critics), st.k):
            self.stop(st, "token_ceiling", f"{st.tokens_used} of {self.ceiling} tokens used; a review round could cross it")
            return
        tasks = [
            self.base_task(st, agents_pb2.ROLE_CRITIC, i, persona=persona, max_tokens=st.k, solution=st.plan,
                           direction=st.direction, memory=st.critic_memory[i][-self.profile.critic_memory:])
            for i, persona in enumerate(critics)
        ]
        if self.cfg.serial_critics:
            replies = [(await steps.run([t], timeout_s=self.step_timeout_s))[0] for t in tasks]
        else:
            # The critics of one round run concurrently.
            replies = await steps.run(tasks, timeout_s=self.step_timeout_s)
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
            st.phase = EXECUTE
        elif st.round >= self.profile.critic_rounds or not self.profile.critic_revision:
            st.consensus.append(False)
            st.phase = EXECUTE
        else:
            st.pending_reviews = objections
            st.phase = REVISE

    async def _revise(self, st: ProblemState, steps: StepRunner) -> None:
        st.solver_memory.extend(st.pending_reviews)
        st.pending_reviews = []
        await self._ask_solver(st, steps)
        if st.phase == REVISE:
            st.round += 1
            st.phase = REVIEW

    async def _execute(self, st: ProblemState, steps: StepRunner) -> None:
        if self.profile.runs_executor(self.kind):
            # check_programs > 1 (executor: check): independent programs, asked at once; the first conclusive
            # one is the check of record (it may block, the team hears it), all of them vote (final_answer).
            count = self.profile.check_programs if self.profile.executor == "check" else 1
            tasks = [self.base_task(st, agents_pb2.ROLE_EXECUTOR, i, solution=st.plan) for i in range(count)]
            replies = await steps.run(tasks, timeout_s=self.step_timeout_s)
            ran = []
            for reply in replies:
                st.record_reply(reply)
                if reply.error:
                    continue
                ex = reply.execution
                ran.append(ex)
                if ex.kind == "check":
                    self.metrics.checks.labels("contradicts" if ex.contradicts else "agrees" if ex.passed
                                         else "inconclusive").inc()
                st.append(outcome_pb2.Trajectory(executions=[ex]))
                if self.profile.final_answer == "vote":
                    answer_vote.note_check(st, ex, st.turn, st.round)
                await self.event(st, "execution", role=agents_pb2.ROLE_EXECUTOR, execution=ex, text=ex.status)
            if ran:
                ex = next((e for e in ran if e.passed or e.contradicts), ran[0])
                st.execution = {f: getattr(ex, f) for f in _EXECUTION_FIELDS}
                st.execution_plan = st.plan
        st.phase = EVALUATE

    @staticmethod
    def execution_of(st: ProblemState) -> agents_pb2.ExecutionResult:
        # States saved before a field existed lack it: the proto's default stands in.
        return agents_pb2.ExecutionResult(**{f: st.execution[f] for f in _EXECUTION_FIELDS if f in st.execution})

    def blocked_by(self, ev: agents_pb2.Evaluation, execution: agents_pb2.ExecutionResult | None) -> str:
        """Why an acceptance does not stand ('' when it does): evidence from execution overrules a word."""
        if ev.correctness != 1 or execution is None:
            return ""
        if execution.kind == "check":
            if execution.contradicts and not (self.profile.check_rebuttal and ev.check_reply.strip()):
                return "the evaluator said correct, but the check contradicts the solution"
            return ""
        if self.profile.require_passing_tests and not execution.passed:
            return f"the evaluator said correct, but the tests failed ({execution.status})"
        return ""

    async def _evaluate(self, st: ProblemState, steps: StepRunner) -> None:
        execution = None
        if st.execution and st.execution_plan == st.plan:
            execution = self.execution_of(st)
        task = self.base_task(st, agents_pb2.ROLE_EVALUATOR, solution=st.plan, execution=execution)
        (reply,) = await steps.run([task], timeout_s=self.step_timeout_s)
        st.record_reply(reply)
        if reply.error:
            # No verdict is not "incorrect": the problem ends as a failed step, and says why.
            self.fail_step(st, reply)
            return
        ev = reply.evaluation
        blocked = self.blocked_by(ev, execution)
        ev.blocked = bool(blocked)
        st.evaluation = {"correctness": ev.correctness, "advice": ev.advice, "recruit_suggestion": ev.recruit_suggestion}
        st.append(outcome_pb2.Trajectory(evaluations=[ev]))
        await self.event(st, "evaluation", role=agents_pb2.ROLE_EVALUATOR, evaluation=ev, text=ev.advice,
                         fallback=ev.fallback, fallback_reason=reply.fallback_reason or reply.error)
        if blocked:
            self.metrics.overruled.labels(execution.kind or "tests").inc()
            st.evaluation["correctness"] = 0  # the CEO hears the turn was not accepted, and why
            st.evaluation["advice"] = self.profile.fragment("not_accepted", why=blocked, advice=ev.advice).strip()
            await self.event(st, "evaluation", role=agents_pb2.ROLE_EXECUTOR, text=f"not accepted: {blocked}")
        gaps = "; ".join(reports.parse(st.plan).problems) if self.profile.structured_report else ""
        if gaps:  # the next turn's CEO and solver learn what the report lacks, whatever the evaluator said
            st.evaluation.update(correctness=0,
                                 advice=self.profile.fragment("complete_report", gaps=gaps, advice=ev.advice).strip())
        if ev.correctness == 1 and gaps and not blocked:
            self.metrics.reports_rejected.inc()
            await self.event(st, "evaluation", role=agents_pb2.ROLE_EVALUATOR,
                             text=f"not accepted: the evaluator said correct, but the report is incomplete ({gaps})")
        elif ev.correctness == 1 and not blocked and not gaps:
            self.stop(st, "accepted", "the evaluator accepted the solution")
            return
        st.turn += 1
        st.phase = DECIDE

    async def single_turn(self, st: ProblemState, steps: StepRunner) -> None:
        if st.turn > self.max_turns:
            self.stop(st, "max_turns", f"{self.max_turns} turns used")
            return
        k = self.single_budget()
        if self.would_cross_ceiling(st, 1, k):
            self.stop(st, "token_ceiling", f"{st.tokens_used} of {self.ceiling} tokens used")
            return
        task = self.base_task(st, agents_pb2.ROLE_SINGLE, max_tokens=k, memory=st.solver_memory[-self.profile.solver_memory:])
        if await self._new_plan(st, steps, task, "assistant") is not None:
            st.turn += 1

    def single_budget(self) -> int:
        """The single agent's token budget (--mode single), also a first_draft: single draft's: the
        profile's largest, cut to what this deployment's pods serve."""
        return min(self.cfg.k_cap or max(self.profile.budget_menu), max(self.profile.budget_menu))

    def fail_step(self, st: ProblemState, reply: agents_pb2.RoleReply) -> None:
        role = agents_pb2.Role.Name(reply.role)
        if reply.failure in failures.OUT_OF_TOKENS:
            self.stop(st, "token_ceiling", f"{role}: {reply.error}")
        else:
            self.stop(st, "error", f"{role} failed: {reply.error}")
