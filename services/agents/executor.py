"""The executor: runs a code solution in the sandbox against the dataset's tests, or tests the model wrote;
with `executor: check`, runs a model-written check of a math or multiple-choice answer (check.py)."""

from __future__ import annotations

import logging
import re

from conclave.v1 import agents_pb2
from services.agents.check import run_check
from services.agents.context import AgentContext
from services.evaluation.graders import grade_code
from services.protocol import parsing
from services.protocol.answers import extract_code
from services.protocol.calling import StepOutcome, call_and_parse
from services.protocol.context import problem_text
from services.protocol.envelopes import reply_to
from services.protocol.roles import WORKER_ROLE_BY_NAME
from services.sandbox import SandboxLimits

log = logging.getLogger(__name__)


def _count_asserts(tests: str) -> int:
    return len(re.findall(r"^\s*assert\b", tests, flags=re.M))


class Executor:
    role = "executor"
    role_enum = WORKER_ROLE_BY_NAME[role]

    def __init__(self, limits: SandboxLimits | None = None) -> None:
        self._limits = limits or SandboxLimits()

    async def serve(self, ctx: AgentContext) -> agents_pb2.RoleReply:
        if ctx.profile.executor == "check" and ctx.profile.runs_executor(ctx.kind):
            result, checked = await run_check(ctx, self._limits)
            return self._reply(ctx, result, checked)
        t = ctx.task
        code = t.problem.code
        outcome: StepOutcome[str] = StepOutcome(value=None)
        tests, dataset_tests = code.tests, bool(code.tests)
        if not dataset_tests:
            messages = ctx.profile.prompt("executor").render(
                problem=problem_text(t.problem), entry_point=code.entry_point or "the function"
            )

            def parse(text: str) -> str:
                block = extract_code(text) or ""
                if _count_asserts(block) == 0:
                    raise parsing.ParseError("no assert statements in a code block")
                return block

            outcome = await call_and_parse(ctx.llm, messages,
                                           ctx.options(self.role_enum, ctx.profile.max_tokens_for("executor")),
                                           parse, retries=ctx.retries, key=t.task_id)
            tests = outcome.value or ""
        result = agents_pb2.ExecutionResult(dataset_tests=dataset_tests, kind="tests")
        if not tests:
            result.status, result.output = "error", "no tests available: the model wrote none that parse"
        else:
            grade = await grade_code(t.solution, tests=tests, entry_point=code.entry_point,
                                     test_setup=code.test_setup, stub=code.stub, limits=self._limits)
            if grade.status == "refused":
                # Not a verdict on the code: this executor has no sandbox that holds (see the sandbox README).
                log.error("code problem %s not run: the sandbox refused (weak mode only here)", t.problem_id)
            result.passed = grade.passed
            result.status = "ok" if grade.passed else grade.status
            result.output = grade.output
            result.wall_s = grade.wall_s
            result.tests_run = _count_asserts(tests) or 1
            result.tests_failed = 0 if grade.passed else 1
        return self._reply(ctx, result, outcome)

    def _reply(self, ctx: AgentContext, result: agents_pb2.ExecutionResult, outcome: StepOutcome) -> agents_pb2.RoleReply:
        reply = reply_to(ctx.task, role=self.role_enum, content=f"{result.status}: {result.output[-500:]}",
                         calls=outcome.calls, fallback=outcome.fallback, fallback_reason=outcome.fallback_reason)
        reply.execution.CopyFrom(result)
        return reply
