"""Verification grounded in execution for math and multiple-choice answers (profiles with `executor: check`).

The executor asks the model for a short Python program that checks the solution's final answer
independently (computes it another way, or substitutes it back into the problem's conditions with
asserts), runs it in the sandbox, and reads the outcome itself rather than trusting the model's
verdict:
- a failed assert: the check contradicts the solution;
- a last `ANSWER: <value>` line that differs from the solution's answer (symbolically for math, by
  letter for choices): it contradicts the solution;
- the same answer: the check agrees (passed), unless it is an echo: a program with no assert whose every
  ANSWER line prints a constant written into the code (`print("ANSWER: 27")`) computed nothing, so its
  agreement is inconclusive (the CPU anchor's audit saw two such echoes let wrong answers through);
- a value the program computed (it ran to the end and printed it, no echo, no template) is marked
  `computed`, agreeing or not: the final-answer vote of `final_answer: vote` profiles counts it;
- anything else (no ANSWER line, an ANSWER that is an unformatted template such as `{Fraction(34, 3)}`, a
  crash, a timeout): inconclusive; it blocks nothing.
"""

from __future__ import annotations

import ast
import re
from functools import partial

from conclave.v1 import agents_pb2
from services.agents.context import AgentContext
from services.evaluation.graders import answers_match
from services.protocol import answers, parsing
from services.protocol.answers import extract_code
from services.protocol.calling import StepOutcome, call_and_parse
from services.protocol.context import problem_text
from services.sandbox import SandboxLimits, run_python

_ANSWER_LINE = re.compile(r"^\s*ANSWER\s*:\s*(.+?)\s*$", re.M)
_OUTPUT_TAIL = 1500
# `{Fraction(34, 3)}` printed as it stands: a Python expression in braces that was never formatted
_TEMPLATE = re.compile(r"\{\s*[A-Za-z_][\w.]*\s*[(\[]")


def printed_answer(stdout: str, *, last_line: bool = False) -> str:
    """The value of a program's last `ANSWER: <value>` line ('' without one); with `last_line`, a program
    that printed no such line answers with its last printed line (`check_last_line` profiles: the anchor's
    programs computed 14/3 right and printed it bare, `print(Fraction(result))`)."""
    found = _ANSWER_LINE.findall(stdout)
    if found:
        return found[-1][:200]
    lines = [line.strip() for line in stdout.splitlines() if line.strip()]
    return lines[-1][:200] if last_line and lines else ""


def parse_program(text: str, *, last_line: bool = False) -> str:
    """The check's program; with `last_line` any program that prints counts (its last line answers)."""
    code = extract_code(text) or ""
    if last_line and re.search(r"\bprint\s*\(", code):
        return code
    if "ANSWER" not in code and not re.search(r"^\s*assert\b", code, re.M):
        raise parsing.ParseError("no Python block that prints ANSWER: or asserts the conditions")
    return code


def _constant(node: ast.expr) -> bool:
    """A value written into the program: a literal, or an f-string / concatenation / tuple of literals only."""
    if isinstance(node, ast.Constant):
        return True
    if isinstance(node, ast.JoinedStr):
        return all(isinstance(v, ast.Constant) or (isinstance(v, ast.FormattedValue) and _constant(v.value))
                   for v in node.values)
    if isinstance(node, ast.BinOp):
        return _constant(node.left) and _constant(node.right)
    if isinstance(node, (ast.Tuple, ast.List)):
        return all(_constant(e) for e in node.elts)
    return False


def is_echo(code: str) -> bool:
    """True when the program asserts nothing and prints its ANSWER only as constants: it computed nothing.
    A program with no ANSWER print (read by its last line, `check_last_line`) is judged by all its prints."""
    try:
        tree = ast.parse(code)
    except SyntaxError:
        return False
    if any(isinstance(n, ast.Assert) for n in ast.walk(tree)):
        return False
    prints = [n for n in ast.walk(tree) if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)
              and n.func.id == "print"]
    prints = [n for n in prints if "ANSWER" in ast.unparse(n)] or prints
    return bool(prints) and all(all(_constant(a) for a in n.args) for n in prints)


def _inconclusive(out: agents_pb2.ExecutionResult, why: str) -> None:
    out.status = "error"
    out.output = (f"inconclusive: {why}\n" + out.output)[-_OUTPUT_TAIL:]


def judge(kind: str, solution_answer: str, status: str, stdout: str, stderr: str,
          code: str = "", *, last_line: bool = False) -> agents_pb2.ExecutionResult:
    """What a finished check run (of the program `code`) says about the solution's answer."""
    out = agents_pb2.ExecutionResult(kind="check", output=(stdout + stderr)[-_OUTPUT_TAIL:])
    out.check_answer = printed_answer(stdout, last_line=last_line)
    found = bool(out.check_answer)
    if "AssertionError" in stderr:
        out.status, out.contradicts = "failed", True
        out.output = ("a condition the check asserts does not hold for the answer " + solution_answer + "\n"
                      + out.output)[-_OUTPUT_TAIL:]
    elif status != "ok" or not found:
        out.status = "error" if status == "ok" else status
        out.output = ("inconclusive: " + ("the check printed no ANSWER line" if status == "ok" else
                                          f"the check did not run to the end ({status})") + "\n" + out.output)
    elif _TEMPLATE.search(out.check_answer):
        _inconclusive(out, "the check printed a template, not a value (an f-string without its f?)")
    elif answers_match(kind, out.check_answer, solution_answer):
        if is_echo(code):
            _inconclusive(out, "the check printed the answer as a constant; it computed nothing")
        else:
            out.status, out.passed, out.computed = "ok", True, True
    else:
        out.status, out.contradicts, out.computed = "failed", True, not is_echo(code)
        out.output = (f"the check computed {out.check_answer}, the solution says {solution_answer}\n"
                      + out.output)[-_OUTPUT_TAIL:]
    out.tests_run = 1
    out.tests_failed = int(out.contradicts)
    return out


async def run_check(ctx: AgentContext, limits: SandboxLimits) -> tuple[agents_pb2.ExecutionResult, StepOutcome]:
    t = ctx.task
    answer = answers.extract_answer(t.solution, ctx.kind)
    if not answer:
        return agents_pb2.ExecutionResult(kind="check", status="no_code",
                                          output="inconclusive: the solution has no final answer to check"), \
            StepOutcome(value=None)
    messages = ctx.profile.prompt("check").render(problem=problem_text(t.problem), answer=answer,
                                                  solution=t.solution)
    outcome = await call_and_parse(ctx.llm, messages, ctx.options(t.role, ctx.profile.max_tokens_for("executor")),
                                   partial(parse_program, last_line=ctx.profile.check_last_line),
                                   retries=ctx.retries, key=t.task_id)
    if outcome.value is None:
        return agents_pb2.ExecutionResult(kind="check", status="error",
                                          output="inconclusive: the model wrote no check program that parses"), outcome
    run = await run_python(outcome.value, limits=limits)
    result = judge(ctx.kind, answer, run.status, run.stdout, run.stderr, code=outcome.value,
                   last_line=ctx.profile.check_last_line)
    result.wall_s = run.wall_s
    return result, outcome
