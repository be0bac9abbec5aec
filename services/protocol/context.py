"""Prompt context every role builds from: the problem as the team reads it, the discussion so far, and
what a check program found."""

from __future__ import annotations

from conclave.v1 import agents_pb2, problem_pb2
from services.protocol.answers import CHOICE_LETTERS
from services.protocol.profile import Profile


def problem_text(problem: problem_pb2.Problem) -> str:
    text = problem.text.strip()
    stub = problem.code.stub.strip()
    if stub and stub not in text:
        # The tests call the dataset's entry point: the signature must be in the statement (MBPP's is not).
        text += f"\n\nUse this signature:\n```python\n{stub}\n```"
    if problem.options:
        text += "\n\nOptions:\n" + "\n".join(f"{CHOICE_LETTERS[i]}. {o}" for i, o in enumerate(problem.options))
    return text


def history_block(profile: Profile, memory: list[agents_pb2.MemoryLine]) -> str:
    if not memory:
        return ""
    lines = "\n".join(f"[{m.sender}]: {m.content}" for m in memory)
    return profile.fragment("history", lines=lines) + "\n\n"


def evaluator_note(profile: Profile, ex: agents_pb2.ExecutionResult, solution_answer: str) -> str:
    """How the evaluator (and next turn's solver and critics) hear about a check."""
    verdict = profile.fragment("check_contradicts" if ex.contradicts else "check_agrees" if ex.passed
                               else "check_inconclusive")
    computed = " " + profile.fragment("check_computed", check_answer=ex.check_answer, answer=solution_answer) \
        if ex.check_answer else ""
    return profile.fragment("check_note", verdict=verdict, computed=computed, output=ex.output[-1000:]) + "\n"


def solver_check_note(profile: Profile, ex: agents_pb2.ExecutionResult, checked_answer: str) -> str:
    """How the solver hears of the latest check (of the answer `checked_answer`): the verdict, what the
    check computed and its output, as the evaluator heard it, and after a contradiction not to repeat the
    answer unexamined ('' when there is no check). Blank lines around it are the caller's."""
    if ex.kind != "check":
        return ""
    advice = profile.fragment("solver_check_contradicts", answer=checked_answer) if ex.contradicts else ""
    return profile.fragment("solver_check", answer=checked_answer, note=evaluator_note(profile, ex, checked_answer),
                            advice=advice).strip()
