"""The role agents: each turns a RoleTask into model calls and a RoleReply.

The protocol's fallbacks (PROTOCOL.md) apply when parsing fails after retries: the recruiter names
generic experts, the solver says it does not know, a critic counts as agreeing, the evaluator scores 0.
"""

from __future__ import annotations

from typing import Protocol

from conclave.v1 import agents_pb2
from services.agents.context import AgentContext
from services.protocol import answers, parsing
from services.protocol.calling import StepOutcome, call_and_parse
from services.protocol.context import evaluator_note, history_block, problem_text, solver_check_note
from services.protocol.envelopes import reply_to
from services.protocol.roles import WORKER_ROLE_BY_NAME


class Agent(Protocol):
    role: str
    role_enum: int

    async def serve(self, ctx: AgentContext) -> agents_pb2.RoleReply: ...


def _reply(ctx: AgentContext, role_enum: int, outcome: StepOutcome, content: str) -> agents_pb2.RoleReply:
    return reply_to(ctx.task, role=role_enum, content=content, calls=outcome.calls, fallback=outcome.fallback,
                    fallback_reason=outcome.fallback_reason)


class Recruiter:
    role = "recruiter"
    role_enum = WORKER_ROLE_BY_NAME[role]

    async def serve(self, ctx: AgentContext) -> agents_pb2.RoleReply:
        t = ctx.task
        n = max(1, t.recruit_number)
        advice = ctx.profile.fragment("advice_note", advice=t.advice) + "\n\n" if t.advice else ""
        messages = ctx.profile.prompt("recruiter").render(problem=problem_text(t.problem), n=n, advice_note=advice)
        out = await call_and_parse(
            ctx.llm, messages, ctx.options(self.role_enum, ctx.profile.max_tokens_for("recruiter")),
            lambda text: parsing.parse_experts(text, n), retries=ctx.retries, key=t.task_id,
        )
        experts = out.value or [parsing.FALLBACK_EXPERTS[i % len(parsing.FALLBACK_EXPERTS)] for i in range(n)]
        reply = _reply(ctx, self.role_enum, out, "\n".join(f"{i + 1}. {e}" for i, e in enumerate(experts)))
        reply.experts.extend(experts)
        return reply


class Solver:
    role = "solver"
    role_enum = WORKER_ROLE_BY_NAME[role]
    prompt_name = "solver"

    async def serve(self, ctx: AgentContext) -> agents_pb2.RoleReply:
        t = ctx.task
        direction = ctx.profile.fragment("direction_note", direction=t.direction) + "\n\n" if t.direction else ""
        revision = ctx.profile.fragment("revision_note") + "\n\n" if t.round > 0 else ""
        checked = solver_check_note(ctx.profile, t.execution, answers.extract_answer(t.solution, ctx.kind)) \
            if t.HasField("execution") else ""
        # A first draft asked as the single agent is (first_draft: single) is the single agent's own prompt:
        # the CEO sent it no persona, direction or memory, so it renders byte for byte as --mode single.
        prompt = SingleAgent.prompt_name if t.as_single_agent else self.prompt_name
        messages = ctx.profile.prompt(prompt).render(
            persona=t.persona or ctx.profile.fragment("solver_persona"), problem=problem_text(t.problem),
            history=history_block(ctx.profile, list(t.memory)), direction_note=direction, revision_note=revision,
            check_note=checked + "\n\n" if checked else "", answer_format=ctx.profile.answer_format,
        )
        kind = ctx.kind

        def parse(text: str) -> str:
            parsing.check_solution(text, kind, echo_of=t.direction)
            return text

        out = await call_and_parse(ctx.llm, messages, ctx.options(self.role_enum, t.max_tokens), parse,
                                   retries=ctx.retries, key=t.task_id)
        if out.value is not None:
            content = out.value
        elif out.last is not None and out.last.visible_text.strip():
            # Keep the model's own text: a malformed answer still carries work the critics can use.
            content = out.last.visible_text
        else:
            content = ctx.profile.fragment("solver_gave_up")
        return _reply(ctx, self.role_enum, out, content)


class SingleAgent(Solver):
    """The paper's baseline: one model call per turn, no CEO, no critics."""

    role = "single"
    role_enum = WORKER_ROLE_BY_NAME[role]
    prompt_name = "single"


class Critic:
    role = "critic"
    role_enum = WORKER_ROLE_BY_NAME[role]

    async def serve(self, ctx: AgentContext) -> agents_pb2.RoleReply:
        t = ctx.task
        messages = ctx.profile.prompt("critic").render(
            persona=t.persona or ctx.profile.fragment("critic_persona"), problem=problem_text(t.problem),
            history=history_block(ctx.profile, list(t.memory)), solution=t.solution,
        )
        reask = ctx.profile.prompt("critic_reask").render()[-1][1]  # a whole user turn, not a fragment

        def ask_for_reasons(exc: parsing.ParseError) -> str | None:
            # A bare [Agree]/[Disagree] is asked once for its reasons; if it stays bare, the protocol's
            # fallback counts it (as agreeing), so a consensus of bare tags is visible as fallbacks.
            return reask if isinstance(exc, parsing.BareTag) else None

        out = await call_and_parse(ctx.llm, messages, ctx.options(self.role_enum, t.max_tokens),
                                   parsing.parse_review, retries=max(ctx.retries, 1), key=t.task_id,
                                   reask=ask_for_reasons)
        if out.value is not None:
            reply = _reply(ctx, self.role_enum, out, out.value.text)
            reply.agree = out.value.agree
        else:
            text = out.last.visible_text if out.last else ""
            reply = _reply(ctx, self.role_enum, out, text or "[Agree]")
            reply.agree = True  # PROTOCOL.md: an unparsable critic counts as agreeing
        return reply


class Evaluator:
    role = "evaluator"
    role_enum = WORKER_ROLE_BY_NAME[role]

    async def serve(self, ctx: AgentContext) -> agents_pb2.RoleReply:
        t = ctx.task
        ex = t.execution
        note = ""
        if t.HasField("execution") and ex.kind == "check":
            note = "\n" + evaluator_note(ctx.profile, ex, answers.extract_answer(t.solution, ctx.kind))
        elif t.HasField("execution") and ex.status:
            source = ctx.profile.fragment("tests_source_dataset" if ex.dataset_tests else "tests_source_team")
            note = "\n" + ctx.profile.fragment("tests_note", source=source, status=ex.status,
                                               failing=ex.tests_failed, output=ex.output[-1500:]) + "\n"
        messages = ctx.profile.prompt("evaluator").render(problem=problem_text(t.problem), solution=t.solution,
                                                          execution_note=note)
        out = await call_and_parse(ctx.llm, messages, ctx.options(self.role_enum, ctx.profile.max_tokens_for("evaluator")),
                                   parsing.parse_verdict, retries=ctx.retries, key=t.task_id)
        verdict = out.value or parsing.Verdict(correctness=0, advice="", recruit="")
        reply = _reply(ctx, self.role_enum, out, out.last.visible_text if out.last else "")
        reply.evaluation.CopyFrom(agents_pb2.Evaluation(
            correctness=verdict.correctness, advice=verdict.advice, recruit_suggestion=verdict.recruit,
            fallback=out.fallback, check_reply=verdict.check,
        ))
        return reply
