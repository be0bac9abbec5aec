"""Scripted model behaviour for protocol tests: what each role answers, decided by rules on the prompt."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field

from conclave.v1 import agents_pb2

R = agents_pb2

Rule = tuple[int, str, str]  # (role, regex that must match the prompt, reply); first match wins


@dataclass
class Script:
    rules: list[Rule] = field(default_factory=list)

    def reply(self, role: int, prompt: str) -> str:
        for rule_role, pattern, text in self.rules:
            if rule_role == role and re.search(pattern, prompt, flags=re.S):
                return text
        raise LookupError(f"no scripted reply for {R.Role.Name(role)}")

    def __call__(self, role: int, prompt: str) -> str:
        return self.reply(role, prompt)


def ceo(n: int = 3, k: int = 4096, direction: str = "Work carefully and check the arithmetic.", stop: bool = False) -> str:
    return (f"Decision: {'stop' if stop else 'continue'}\nRecruit Number: {n}\nDirection: {direction}\n"
            f"Maximum Tokens: {k}")


RECRUIT = "1. A math expert who computes the sum\n2. A checker who verifies each step\n3. A teacher who explains"
AGREE = "I checked every step of the computation and the final answer is right.\n[Agree]"
DISAGREE = "The sum is wrong: two plus three is five, not four, so the boxed answer is wrong.\n[Disagree]"
CORRECT = "Correctness: 1\nAdvice: nothing to fix\nRecruit: none"
WRONG = "Correctness: 0\nAdvice: recompute the sum\nRecruit: an arithmetic expert"


def team(**overrides: list[Rule]) -> Script:
    """A well-behaved team answering 2+3; `overrides` puts rules before the defaults of a role."""
    defaults: dict[str, list[Rule]] = {
        "ceo": [(R.ROLE_CEO, ".", ceo())],
        "recruiter": [(R.ROLE_RECRUITER, ".", RECRUIT)],
        "solver": [(R.ROLE_SOLVER, ".", "Two plus three is five, so the answer is \\boxed{5}.")],
        "critic": [(R.ROLE_CRITIC, ".", AGREE)],
        "evaluator": [(R.ROLE_EVALUATOR, ".", CORRECT)],
        "single": [(R.ROLE_SINGLE, ".", "The answer is \\boxed{5}.")],
        "executor": [],
    }
    rules: list[Rule] = []
    for role, default in defaults.items():
        rules += overrides.get(role, []) + default
    return Script(rules)


ScriptFn = Callable[[int, str], str]
