"""Tolerant parsers for every role's output. Each raises `ParseError` with a reason the retry can use.

Small models drift from the requested format; these parsers accept the common variants (markdown
bold, different casing, numbers with commas, tags without brackets) but refuse what would make the
protocol not really happen: a critic's bare tag with no reasons, a CEO reply with no decision.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from services.protocol.answers import extract_boxed, extract_choice, extract_code


class ParseError(ValueError):
    pass


class BareTag(ParseError):
    """A review that is only a tag: the one failure a critic is re-asked about (roles.Critic)."""


@dataclass(frozen=True)
class Decision:
    stop: bool
    recruit_number: int
    direction: str
    max_tokens: int
    # Stop was said while stop was not on offer (no solution yet): read as continue.
    stop_set_aside: bool = False


@dataclass(frozen=True)
class Review:
    agree: bool
    text: str


@dataclass(frozen=True)
class Verdict:
    correctness: int
    advice: str
    recruit: str
    # Its answer to a contradicting check (a "Check:" line), in profiles that ask for one.
    check: str = ""


def _clean(text: str) -> str:
    return re.sub(r"[*_`#]+", "", text)


def _field(text: str, *labels: str) -> str | None:
    for label in labels:
        m = re.search(rf"^\s*[-\d. ]*{label}\s*[:：=-]\s*(.+?)\s*$", text, flags=re.I | re.M)
        if m:
            return m.group(1).strip()
    return None


def _int(value: str | None) -> int | None:
    if value is None:
        return None
    m = re.search(r"(\d[\d,_]*)(\s*[kK]\b)?", value)
    if not m:
        return None
    number = int(m.group(1).replace(",", "").replace("_", ""))
    return number * 1000 if m.group(2) else number


def clamp(value: int, low: int, high: int) -> int:
    return max(low, min(high, value))


def snap(value: int, menu: tuple[int, ...]) -> int:
    """The menu entry nearest to what the CEO asked for (ties go to the larger budget)."""
    return min(menu, key=lambda k: (abs(k - value), -k))


def parse_decision(text: str, *, n_min: int, n_cap: int, menu: tuple[int, ...], allow_stop: bool = True) -> Decision:
    """allow_stop=False (before the first solution): a stop is read as continue, and says so."""
    body = _clean(text)
    action = _field(body, "decision", "action")
    if action is None:
        raise ParseError("no 'Decision:' line")
    low = action.lower()
    if "stop" in low or "end" in low.split() or "finish" in low:
        stop = True
    elif "continue" in low or "proceed" in low or "go on" in low:
        stop = False
    else:
        raise ParseError(f"decision {action[:40]!r} is neither continue nor stop")
    n = _int(_field(body, "recruit number", "recruit", "number of experts", "team size"))
    if n is None:
        raise ParseError("no 'Recruit Number:' with a number")
    k = _int(_field(body, "maximum tokens", "max tokens", "token budget", "tokens"))
    if k is None:
        raise ParseError("no 'Maximum Tokens:' with a number")
    direction = _field(body, "direction") or ""
    set_aside = stop and not allow_stop
    if not stop and len(direction.split()) < 2:
        raise ParseError("no 'Direction:' sentence")
    return Decision(stop=stop and allow_stop, recruit_number=clamp(n, n_min, n_cap), direction=direction,
                    max_tokens=snap(clamp(k, min(menu), max(menu)), menu), stop_set_aside=set_aside)


def parse_experts(text: str, n: int) -> list[str]:
    items = []
    for line in _clean(text).splitlines():
        m = re.match(r"^\s*(?:\d+[.)]|[-•])\s+(.{3,})$", line)
        if m:
            items.append(m.group(1).strip().rstrip("."))
    if len(items) < n:
        raise ParseError(f"named {len(items)} experts, {n} were asked for")
    return items[:n]


def parse_review(text: str, *, min_reason_words: int = 6) -> Review:
    body = text.strip()
    tags = list(re.finditer(r"\[?\b(agree|disagree)\b\]?", body, flags=re.I))
    bracketed = [t for t in tags if t.group(0).startswith("[")]
    last = (bracketed or tags or [None])[-1]
    if last is None:
        raise ParseError("no [Agree] or [Disagree] tag")
    agree = last.group(1).lower() == "agree"
    # Reasons come before the verdict; what follows a tag is usually the prompt's wording echoed back.
    reasons = body[: last.start()].strip()
    if len(re.findall(r"\w+", reasons)) < min_reason_words:
        # The protocol needs reasons: a bare tag gives the solver nothing to revise with.
        raise BareTag("a review needs reasons before its tag, not a bare tag")
    return Review(agree=agree, text=body[: last.end()].strip())


def parse_verdict(text: str) -> Verdict:
    body = _clean(text)
    raw = _field(body, "correctness", "correct", "score")
    if raw is None:
        raise ParseError("no 'Correctness:' line")
    m = re.search(r"\b([01])\b|\b(yes|no|true|false|correct|incorrect)\b", raw, flags=re.I)
    if not m:
        raise ParseError(f"correctness {raw[:30]!r} is not 0 or 1")
    word = (m.group(1) or m.group(2)).lower()
    score = 1 if word in ("1", "yes", "true", "correct") else 0
    return Verdict(correctness=score, advice=_field(body, "advice", "feedback") or "",
                   recruit=_field(body, "recruit", "recruit suggestion") or "",
                   check=_field(body, "check") or "")


def check_solution(text: str, kind: str, *, echo_of: str = "") -> None:
    """Refuses solutions without the required answer format (or that just echo the direction)."""
    stripped = text.strip()
    if not stripped:
        raise ParseError("empty solution")
    if echo_of and _echoes(stripped, echo_of.strip()):
        raise ParseError("the solution repeats the direction instead of solving")
    if kind == "math":
        boxed = extract_boxed(stripped)
        if not boxed:
            raise ParseError("no final answer in \\boxed{}")
        if is_placeholder(boxed):
            raise ParseError("\\boxed{} holds a placeholder, not an answer")
    elif kind == "multiple_choice":
        if not extract_choice(stripped):
            raise ParseError("no option letter")
    elif kind == "code":
        if not extract_code(stripped):
            raise ParseError("no code block")


_PLACEHOLDERS = frozenset({"answer", "youranswer", "finalanswer", "thefinalanswer", "theanswer", "answerhere",
                           "yourfinalanswer", "ans", "result", "...", "…", ""})


def is_placeholder(boxed: str) -> bool:
    """\\boxed{answer}, \\boxed{\\text{Your answer}}, \\boxed{<answer>}: the prompt's wording, not an answer."""
    s = re.sub(r"\\(?:text|textbf|mathrm)\s*\{([^{}]*)\}", r"\1", boxed)
    return re.sub(r"[\s<>_*`'\"]+", "", s).lower() in _PLACEHOLDERS


def _echoes(solution: str, direction: str) -> bool:
    """The solution is the direction, or the direction with little added (a small model copying it)."""
    if solution == direction:
        return True
    return len(direction) > 20 and direction in solution and len(solution) < 1.3 * len(direction) + 40


FALLBACK_EXPERTS = (
    "A generalist problem solver who works through the problem step by step",
    "A careful reviewer who checks every step for errors",
    "A domain specialist who checks the key facts and definitions",
    "A sceptic who looks for edge cases and overlooked assumptions",
    "A verifier who recomputes the final result independently",
)
