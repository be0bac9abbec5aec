"""What makes a Problem acceptable. Errors are sentences a publisher can act on."""

from __future__ import annotations

from conclave.v1 import problem_pb2
from services.bus.subjects import valid_problem_id

MAX_TEXT_CHARS = 200_000


def problem_errors(p: problem_pb2.Problem) -> list[str]:
    errors: list[str] = []
    if not p.id:
        errors.append("id is required")
    elif not valid_problem_id(p.id):
        errors.append(f"id {p.id[:40]!r} must be 1-128 characters of A-Z a-z 0-9 _ -")
    if p.kind == problem_pb2.PROBLEM_KIND_UNSPECIFIED:
        errors.append("kind is required (PROBLEM_KIND_MATH, _MULTIPLE_CHOICE, _CODE or _OPEN_ENDED)")
    if not p.text.strip():
        errors.append("text is empty")
    elif len(p.text) > MAX_TEXT_CHARS:
        errors.append(f"text has {len(p.text)} characters; the limit is {MAX_TEXT_CHARS}")
    if p.kind == problem_pb2.PROBLEM_KIND_MULTIPLE_CHOICE and len(p.options) < 2:
        errors.append("a multiple-choice problem needs at least 2 options")
    if p.kind == problem_pb2.PROBLEM_KIND_CODE and p.code.tests and not p.code.entry_point:
        errors.append("code.entry_point is required when code.tests are given")
    lim = p.limits
    if lim.max_total_tokens < 0 or lim.max_turns < 0 or lim.deadline_s < 0:
        errors.append("limits must not be negative")
    return errors
