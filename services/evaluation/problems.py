"""Turning benchmark items (services/evaluation/loaders.py) into bus Problems."""

from __future__ import annotations

import re

from conclave.v1 import problem_pb2
from services.evaluation.loaders import BenchItem
from services.protocol.kinds import KIND_BY_NAME


def safe_id(raw: str) -> str:
    """Benchmark ids like 'HumanEval/0' become subject-safe ids like 'HumanEval-0'."""
    return re.sub(r"[^A-Za-z0-9_-]", "-", raw)[:128]


def item_to_problem(item: BenchItem, *, profile: str = "", single_agent: bool = False, prefix: str = "",
                    max_total_tokens: int = 0, max_turns: int = 0, with_tests: bool = True) -> problem_pb2.Problem:
    """with_tests=False keeps a code item's tests from the team (an eval grades with them afterwards)."""
    p = problem_pb2.Problem(id=safe_id(prefix + item.id), kind=KIND_BY_NAME[item.kind], text=item.text, profile=profile,
                            single_agent=single_agent)
    if item.reference_answer is not None:
        p.reference_answer = str(item.reference_answer)
    if item.options:
        p.options.extend(item.options)
        if item.correct_letter:
            p.reference_answer = item.correct_letter
    if item.kind == "code":
        p.code.entry_point = item.entry_point or ""
        p.code.tests = (item.tests or "") if with_tests else ""
        p.code.test_setup = item.test_setup or ""
        p.code.stub = item.stub or ""
        p.code.language = "python"
    for key, value in (item.metadata or {}).items():
        p.metadata[str(key)] = str(value)
    p.metadata.setdefault("source_id", item.id)
    p.limits.max_total_tokens = max_total_tokens
    p.limits.max_turns = max_turns
    return p
