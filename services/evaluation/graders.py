"""Grading: math (symbolic, via math-verify), multiple choice, and code (sandboxed). The answers are
extracted by services/protocol/answers.py.

Decisions worth knowing (tests pin them):
- Math: only the LAST \\boxed{...} / \\fbox{...} counts. Without one, math-verify's own extraction of the
  final answer from the whole text is used, unless `require_boxed=True`.
- Several comma-separated answers in one box ("2, 3") are an unordered set: "3,2" matches, "2" or
  "2, 4" do not. Write ordered pairs/tuples with parentheses: "(2, 3)" is a point or an interval.
- Text answers (a reference like \\text{Evelyn} or \\text{(C)}) compare as normalised strings
  (case, spaces, \\text{}, parentheses and punctuation ignored), never symbolically: math-verify
  would read "Nevely" as the product of the same letters.
- Units and degree signs are dropped by math-verify's normalisation: 10\\text{ cm} == 10, 30^\\circ == 30.
- math-verify's time limits use SIGALRM, which exists only in the main thread. Elsewhere (a worker
  thread, asyncio.to_thread) grading runs without them; the length cap below is then what bounds it.
"""

from __future__ import annotations

import random
import re
import secrets
import threading
from dataclasses import dataclass

from services.protocol.answers import CHOICE_LETTERS, extract_boxed, extract_choice, extract_code
from services.sandbox import SandboxLimits, run_python

MAX_ANSWER_CHARS = 2000  # longer "answers" are refused unparsed: sympy can take minutes on them
_MATH_TIMEOUT_S = 5

# ------------------------------------------------------------------------------------------------ math

_TEXT_WRAPPER = re.compile(r"^\\(?:text|textbf|textit|mathrm|mbox)\s*\{(.*)\}$", re.S)
_NOT_TEXT = frozenset({"inf", "infty", "infinity", "pi", "sqrt", "sin", "cos", "tan", "log", "ln", "exp"})


def _text_key(answer: str) -> str | None:
    """Lower-case letters of an answer with \\text{} wrappers, spaces and punctuation dropped;
    None if anything else (a digit, an operator, a command) is left."""
    s = answer.strip().strip("$").strip()
    s = re.sub(r"\\(?:text|textbf|textit|mathrm|mbox)\s*\{([^{}]*)\}", r"\1", s)
    letters = re.sub(r"[\s().,;:!'\"*-]", "", s).lower()
    return letters if letters.isalpha() else None


def _text_answer(reference: str) -> str | None:
    """The text key of a reference that is a word rather than mathematics, else None."""
    key = _text_key(reference)
    if key is None:
        return None
    s = reference.strip().strip("$").strip()
    if _TEXT_WRAPPER.match(s) or (len(key) >= 3 and key not in _NOT_TEXT and "\\" not in s):
        return key
    return None


def _strip_math_delimiters(s: str) -> str:
    s = s.strip()
    for left, right in (("$$", "$$"), ("$", "$"), ("\\(", "\\)"), ("\\[", "\\]")):
        if s.startswith(left) and s.endswith(right) and len(s) > len(left) + len(right):
            return s[len(left) : -len(right)].strip()
    return s


def grade_math(answer_text: str, reference: str, *, require_boxed: bool = False) -> bool:
    """Whether the final answer in `answer_text` equals `reference` (a bare answer, LaTeX allowed)."""
    from math_verify import parse, verify  # heavy (sympy): only when math is graded

    ref = extract_boxed(reference) or _strip_math_delimiters(reference)
    boxed = extract_boxed(answer_text)
    if boxed is None and require_boxed:
        return False
    if len(boxed if boxed is not None else answer_text) > MAX_ANSWER_CHARS * (1 if boxed is not None else 50):
        return False

    ref_text = _text_answer(ref)
    if ref_text is not None:
        pred = boxed if boxed is not None else _last_line(re.split(r"answer\s*(?:is|:)", answer_text, flags=re.I)[-1])
        return _text_key(pred) == ref_text

    # SIGALRM-based limits only work in the main thread; elsewhere pass None or math-verify raises.
    timeout = _MATH_TIMEOUT_S if threading.current_thread() is threading.main_thread() else None
    gold = parse("\\boxed{" + ref + "}", parsing_timeout=timeout)  # type: ignore[arg-type]
    if not gold:
        return False
    pred_source = "\\boxed{" + _clean_boxed(boxed) + "}" if boxed is not None else answer_text
    pred = parse(pred_source, parsing_timeout=timeout)  # type: ignore[arg-type]
    if not pred:
        return False
    return bool(verify(gold, pred, timeout_seconds=timeout))


def answers_match(kind: str, a: str, b: str) -> bool:
    """Two extracted final answers (no \\boxed{} around them) are the same answer: symbolically for math,
    by letter for multiple choice, as exact text otherwise."""
    if a.strip() == b.strip():
        return True
    if kind == "math":
        return grade_math("\\boxed{" + a + "}", b) or grade_math("\\boxed{" + b + "}", a)
    if kind == "multiple_choice":
        la, lb = extract_choice(a), extract_choice(b)
        return la is not None and la == lb
    return False


def _clean_boxed(content: str) -> str:
    """Undo formatting math-verify trips on: a sentence's full stop, a bold or \\text wrapper."""
    s = re.sub(r"(?<!\.)\.\s*$", "", content.strip())
    wrapped = _TEXT_WRAPPER.match(s)
    return wrapped.group(1).strip() if wrapped else s


def _last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else ""


# -------------------------------------------------------------------------------------- multiple choice

def grade_choice(answer_text: str, correct_letter: str) -> bool:
    return extract_choice(answer_text) == correct_letter.strip().upper()


def shuffle_options(options: list[str], correct_index: int, seed: str | int) -> tuple[list[str], str]:
    """Options in an order fixed by `seed` (same seed, same order on every run and machine) and the
    letter the correct one ends up under."""
    if not 0 <= correct_index < len(options) <= len(CHOICE_LETTERS):
        raise ValueError(f"correct_index {correct_index} out of range for {len(options)} options")
    order = list(range(len(options)))
    random.Random(f"{seed}").shuffle(order)  # a string seed hashes the same everywhere
    return [options[i] for i in order], CHOICE_LETTERS[order.index(correct_index)]


# ------------------------------------------------------------------------------------------------ code

@dataclass
class CodeGrade:
    passed: bool
    status: str  # "passed", "failed", "timeout", "memory", "error", "no_code", "refused" (the sandbox would not run code in its weak mode)
    output: str  # tail of stdout + stderr, for the reason
    wall_s: float = 0.0


_OUTPUT_TAIL = 4000


async def grade_code(
    solution_text: str,
    *,
    tests: str,
    entry_point: str,
    test_setup: str = "",
    stub: str = "",
    limits: SandboxLimits | None = None,
) -> CodeGrade:
    """Run the extracted solution against `tests` in the sandbox.

    HumanEval-style tests (they define `check(candidate)`) are followed by `check(<entry_point>)`;
    MBPP-style tests (assert lines) run as they are. If the code does not define `entry_point` and a
    `stub` (the prompt's signature) is given, the code is taken as the body that completes the stub.
    The run passes only if it exits 0 AND prints a per-run random marker after the tests, so a
    solution that calls exit(0) early does not pass.
    """
    code = extract_code(solution_text)
    if code is None and stub and solution_text.strip():
        code = solution_text.strip("\n")  # a bare completion of the stub, HumanEval style
    if code is None:
        return CodeGrade(False, "no_code", "no code found in the answer")
    if stub and not re.search(rf"^\s*(?:async\s+)?def\s+{re.escape(entry_point)}\s*\(", code, re.M):
        code = stub.rstrip("\n") + "\n" + code
    marker = f"CONCLAVE-TESTS-PASSED-{secrets.token_hex(16)}"
    call = f"\ncheck({entry_point})\n" if re.search(r"^def\s+check\s*\(", tests, re.M) else "\n"
    program = "\n\n".join(part for part in (test_setup, code, tests + call, f"print({marker!r})") if part)
    result = await run_python(program, limits=limits or SandboxLimits())
    output = (result.stdout + result.stderr).replace(marker, "")[-_OUTPUT_TAIL:]
    completed = result.stdout.rstrip().endswith(marker)
    if result.status == "ok" and completed:
        return CodeGrade(True, "passed", output, result.wall_s)
    status = result.status if result.status != "ok" else "failed"
    if result.status == "ok" and not completed:
        output = (output + "\n[the tests did not run to the end]").lstrip()
    if result.detail:
        output = (output + f"\n[{result.detail}]").lstrip()
    return CodeGrade(False, status, output, result.wall_s)
