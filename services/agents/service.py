"""One service per role: consumes conclave.tasks.<role>, answers on conclave.replies.<problem>.<role>.<step>.

Idempotent: a task whose reply is already in the REPLIES stream (a redelivery after a crash between
publishing and acking) is acked without calling the model again, and replies carry the task id as
Nats-Msg-Id so a duplicate publish is dropped.
"""

from __future__ import annotations

import logging

from prometheus_client import Counter, Histogram

from conclave.v1 import agents_pb2
from services.agents.context import AgentContext
from services.agents.executor import Executor
from services.agents.roles import Agent, Critic, Evaluator, Recruiter, SingleAgent, Solver
from services.bus import subjects, topology
from services.bus.headers import MSG_ID
from services.bus.lookup import last_message
from services.bus.retry import retrying
from services.inference import failures
from services.inference.client import LlmClient, LlmError
from services.protocol import profile as profiles
from services.protocol.envelopes import reply_to
from services.runtime import tracing
from services.runtime.lifecycle import Runtime, Service
from services.runtime.logs import problem_id_var
from services.runtime.settings import RuntimeSettings
from services.runtime.worker import Rejected, WorkContext
from services.security.grpc_tls import gateway_credentials

log = logging.getLogger(__name__)


class AgentSettings(RuntimeSettings):
    """A role service needs only what every service does (the gateway's address and deadline included)."""


def step_of(task_id: str) -> str:
    """'pid/t1-r0-solver-0' -> 't1-r0-solver-0' (a subject token)."""
    return task_id.rsplit("/", 1)[-1]


class RoleService(Service[AgentSettings]):
    def __init__(self, settings: AgentSettings, agent: Agent) -> None:
        super().__init__(settings)
        self.agent = agent
        self.name = agent.role  # type: ignore[misc]
        self.description = f"Conclave {agent.role} agents"  # type: ignore[misc]

    async def setup(self, rt: Runtime[AgentSettings]) -> None:
        self._rt = rt
        self._llm = LlmClient(self.settings.inference_addr, gateway_credentials(self.settings))
        rt.on_close(self._llm.close)
        self._served = Counter("conclave_agent_tasks", "Role tasks served, by role and outcome.",
                               ["role", "outcome"], registry=rt.registry)
        self._fallbacks = Counter("conclave_parse_fallbacks", "Protocol fallbacks used after unparsable replies.",
                                  ["role"], registry=rt.registry)
        self._calls = Counter("conclave_agent_model_calls", "Model calls made by agents, by role.",
                              ["role"], registry=rt.registry)
        self._tokens = Counter("conclave_agent_tokens", "Tokens used by agents, by role and kind.",
                               ["role", "kind"], registry=rt.registry)
        self._seconds = Histogram("conclave_agent_task_seconds", "Time to serve a role task.", ["role"],
                                  registry=rt.registry, buckets=(0.01, 0.05, 0.2, 1, 5, 15, 60, 180, 600))
        rt.add_worker(topology.ROLE_CONSUMERS[self.agent.role], agents_pb2.RoleTask, self.handle)

    async def handle(self, ctx: WorkContext, task: agents_pb2.RoleTask) -> None:
        # A child of the CEO's step span; the gateway call below is a child of this one.
        with tracing.consuming(self.agent.role, f"{self.agent.role}.task", ctx.msg.headers,
                               role=self.agent.role, delivery=ctx.deliveries) as span:
            await self._handle(ctx, task, span)

    async def _handle(self, ctx: WorkContext, task: agents_pb2.RoleTask, span: tracing.Span) -> None:
        problem_id_var.set(task.problem_id)
        span.set_attributes({tracing.TURN: task.turn, tracing.ROUND: task.round, tracing.INDEX: task.index})
        if not subjects.valid_problem_id(task.problem_id) or "/" not in task.task_id:
            raise Rejected("invalid_task", f"task {task.task_id!r} of problem {task.problem_id!r} is malformed")
        reply_subject = subjects.reply(task.problem_id, step_of(task.task_id))
        if ctx.deliveries > 1:
            # A redelivery: the crashed worker may have answered before it could ack.
            if await last_message(self._rt.js, topology.REPLIES, reply_subject, leader=True) is not None:
                self._served.labels(self.agent.role, "already_answered").inc()
                tracing.set_outcome(span, "already_answered")
                return
        with self._seconds.labels(self.agent.role).time():
            reply = await self._serve(task, ctx)
        reply.worker = self._rt.instance
        for call in reply.calls:
            self._calls.labels(self.agent.role).inc()
            self._tokens.labels(self.agent.role, "prompt").inc(call.prompt_tokens)
            self._tokens.labels(self.agent.role, "completion").inc(call.completion_tokens)
        if reply.fallback:
            self._fallbacks.labels(self.agent.role).inc()
        # Through a NATS restart too: failing here would redeliver the task, and call the model again.
        await retrying(lambda: self._rt.js.publish(reply_subject, reply.SerializeToString(),
                                                   headers={MSG_ID: task.task_id}), "publish reply",
                       give_up_s=self.settings.bus_give_up_s)
        self._served.labels(self.agent.role, "error" if reply.error else "ok").inc()
        tracing.set_outcome(span, "error" if reply.error else "ok", error=bool(reply.error), fallback=reply.fallback,
                            tokens=sum(c.prompt_tokens + c.completion_tokens for c in reply.calls))

    async def _serve(self, task: agents_pb2.RoleTask, ctx: WorkContext) -> agents_pb2.RoleReply:
        try:
            # The profile the CEO chose, named in the task: roles run in other processes, so each resolves it.
            profile = profiles.resolve(task.problem, task.profile)
        except profiles.ProfileError as exc:
            return self._error_reply(task, f"profile: {exc}", agents_pb2.FAILURE_REASON_INVALID_REQUEST)
        try:
            # Each model call may stream for model_call_timeout_s; the worker redelivers a failure that
            # retrying can fix (BackOff), up to max_deliver, and the CEO hears of the rest.
            return await self.agent.serve(AgentContext(task=task, profile=profile, llm=self._llm,
                                                       call_timeout_s=self.settings.model_call_timeout_s))
        except LlmError as exc:
            # A failure that retrying cannot fix goes to the CEO at once, instead of being redelivered: it
            # decides what a failed step means for the problem.
            if exc.reason in failures.FINAL or ctx.last_attempt:
                return self._error_reply(task, str(exc), exc.reason)
            raise

    def _error_reply(self, task: agents_pb2.RoleTask, error: str, reason: int) -> agents_pb2.RoleReply:
        log.warning("task failed: %s", error, extra={"failure": agents_pb2.FailureReason.Name(reason)})
        return reply_to(task, error=error, failure=reason)


def _build(agent: Agent):
    def build(settings: AgentSettings | None = None) -> RoleService:
        return RoleService(settings or AgentSettings(), agent)

    return build


build_recruiter = _build(Recruiter())
build_solver = _build(Solver())
build_critic = _build(Critic())
build_executor = _build(Executor())
build_evaluator = _build(Evaluator())
build_single = _build(SingleAgent())
