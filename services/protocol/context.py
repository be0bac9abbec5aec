"""Prompt context every role builds from: the problem as the team reads it, the discussion so far, and
what a check program found."""

from __future__ import annotations

from conclave.v1 import agents_pb2, problem_pb2
from services.protocol.answers import CHOICE_LETTERS


def problem_text(problem: problem_pb2.Problem) -> str:
    text = problem.text.strip()
    stub = problem.code.stub.strip()
    if stub and stub not in text:
        # The tests call the dataset's entry point: the signature must be in the statement (MBPP's is not).
        text += f"\n\nUse this signature:\n```python\n{stub}\n```"
    if problem.options:
        text += "\n\nOptions:\n" + "\n".join(f"{CHOICE_LETTERS[i]}. {o}" for i, o in enumerate(problem.options))
    return text


def history_block(memory: list[agents_pb2.MemoryLine]) -> str:
    if not memory:
        return ""
    lines = "\n".join(f"[{m.sender}]: {m.content}" for m in memory)
    return f"Discussion so far:\n{lines}\n\n"


def evaluator_note(ex: agents_pb2.ExecutionResult, solution_answer: str) -> str:
    """How the evaluator (and next turn's solver and critics) hear about a check."""
    if ex.contradicts:
        verdict = "CONTRADICTS the solution"
    elif ex.passed:
        verdict = "agrees with the solution"
    else:
        verdict = "was inconclusive"
    computed = f" It computed {ex.check_answer}; the solution's answer is {solution_answer}." if ex.check_answer else ""
    return f"An independent check program was run in a sandbox: it {verdict}.{computed}\nOutput:\n{ex.output[-1000:]}\n"
