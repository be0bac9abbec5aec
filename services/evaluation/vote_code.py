"""Code votes decided by the model's own tests, as the paper's executor would write them.

When the samples of a code problem fall into more than one class (vote.code_key), one more single-agent
call writes assert statements for the function (the executor's prompt; the grading tests stay hidden),
and every class's representative runs against each assert separately in the sandbox. The class that
passes most asserts wins; ties go to the larger class, then to the one sampled first. The tests call's
tokens count toward the vote's.
"""

from __future__ import annotations

import ast
import asyncio
import hashlib

from conclave.v1 import problem_pb2
from services.evaluation.graders import grade_code
from services.protocol import profile as profiles
from services.protocol.answers import extract_code
from services.protocol.context import problem_text


def tests_problem(problem: problem_pb2.Problem, base_id: str) -> problem_pb2.Problem:
    """A single-agent problem whose answer is the asserts (open-ended: its text asks for a code block)."""
    prof = profiles.for_problem(problem)
    (_, _), (_, text) = prof.prompt("executor").render(problem=problem_text(problem),
                                                       entry_point=problem.code.entry_point or "the function")
    pid = f"{base_id}-tests"
    if len(pid) > 128:
        pid = f"{base_id[:110]}-{hashlib.blake2b(base_id.encode(), digest_size=4).hexdigest()}-tests"
    p = problem_pb2.Problem(id=pid, kind=problem_pb2.PROBLEM_KIND_OPEN_ENDED, text=text, profile="open",
                            single_agent=True)
    p.metadata.update(problem.metadata)
    p.metadata["vote_tests"] = "true"
    return p


def split_asserts(text: str) -> tuple[str, list[str]]:
    """The model's test block as (setup code, one source string per assert); ('', []) if it has none."""
    code = extract_code(text) or ""
    try:
        tree = ast.parse(code)
    except SyntaxError:
        return "", []
    setup = [ast.get_source_segment(code, n) or "" for n in tree.body if not isinstance(n, ast.Assert)]
    asserts = [ast.get_source_segment(code, n) or "" for n in tree.body if isinstance(n, ast.Assert)]
    return "\n".join(setup), [a for a in asserts if a]


async def passed_asserts(candidate: str, setup: str, asserts: list[str], problem: problem_pb2.Problem) -> int:
    code = problem.code

    async def one(line: str) -> bool:
        grade = await grade_code(candidate, tests=f"{setup}\n{line}" if setup else line,
                                 entry_point=code.entry_point, test_setup=code.test_setup, stub=code.stub)
        return grade.passed

    return sum(await asyncio.gather(*(one(a) for a in asserts)))


def pick(classes: list[list[int]], passes: list[int]) -> int:
    """Index into `classes` of the winner: most asserts passed, then the larger class, then the earlier."""
    return max(range(len(classes)), key=lambda c: (passes[c], len(classes[c]), -classes[c][0]))
