"""Answer extraction: the final answer of a solution, by problem kind (PROTOCOL.md "Answers and grading").

The parsers refuse a solution without one, the CEO reports it, the graders (services/evaluation/graders.py)
compare it. Only the LAST \\boxed{...} / \\fbox{...} counts; a choice is a letter; code is the last
fenced Python block.
"""

from __future__ import annotations

import re

CHOICE_LETTERS = "ABCDEFGHIJ"

# ----------------------------------------------------------------------------------------------- boxed

_BOX_START = re.compile(r"\\(?:boxed|fbox)\b\s*")


def _balanced_group(text: str, open_at: int) -> str | None:
    """Contents of the {...} group whose "{" is at `open_at`; escaped braces (\\{ \\}) do not count."""
    depth = 0
    i = open_at
    while i < len(text):
        c = text[i]
        if c == "\\":
            i += 2
            continue
        if c == "{":
            depth += 1
        elif c == "}":
            depth -= 1
            if depth == 0:
                return text[open_at + 1 : i]
        i += 1
    return None


def extract_boxed(text: str) -> str | None:
    """The content of the last complete \\boxed{...} (or \\fbox{...}); also the bare form `\\boxed 5`."""
    found: str | None = None
    for m in _BOX_START.finditer(text):
        if m.end() < len(text) and text[m.end()] == "{":
            content = _balanced_group(text, m.end())
        elif m.group(0)[-1:].isspace():  # "\boxed 5": a single bare token
            bare = re.match(r"[^\s$\\{}]+", text[m.end() :])
            content = bare.group(0) if bare else None
        else:
            content = None
        if content is not None:
            found = content
    return found.strip() if found is not None else None


# -------------------------------------------------------------------------------------- multiple choice

_L = f"[{CHOICE_LETTERS}]"
_CHOICE_PATTERNS = [
    # "the answer is (B)", "Answer: **C**", "final answer: D", "correct option is B."
    re.compile(
        rf"(?:answer|option|choice)\s*(?:is|:)?\s*(?:is\s*)?[:\s]*(?:\*\*|\\textbf\{{)?\s*\(?({_L})\)?(?![A-Za-z0-9])",
        re.I,
    ),
    re.compile(rf"\(({_L})\)"),  # a lone "(C)"
    re.compile(rf"^\s*\**\(?({_L})[).:]?\**\s*$", re.M),  # a line that is just "C", "C.", "(C)"
]


def extract_choice(text: str, letters: str = CHOICE_LETTERS) -> str | None:
    """The chosen option letter: last boxed letter, else the last "answer is X", else a lone (X) or X line."""
    boxed = extract_boxed(text)
    if boxed is not None:
        letter = re.sub(r"\\(?:text|textbf|mathrm)\s*\{([^{}]*)\}", r"\1", boxed)
        letter = letter.strip().strip("()[]. ").upper()
        if len(letter) == 1 and letter in letters:
            return letter
    for pattern in _CHOICE_PATTERNS:
        hits = [m.group(1).upper() for m in pattern.finditer(text) if m.group(1).upper() in letters]
        if hits:
            return hits[-1]
    return None


# ------------------------------------------------------------------------------------------------ code

_FENCE = re.compile(r"```[ \t]*([\w+#.-]*)[^\n]*\n(.*?)(?:```|\Z)", re.S)
_PY_LANGS = frozenset({"", "python", "py", "python3", "py3"})
_CODE_LINE = re.compile(r"^(?:def |class |import |from \S+ import |async def |@\w)", re.M)


def extract_code(text: str) -> str | None:
    """The last fenced Python (or untagged) block; else the last fenced block of any language; an
    unclosed final fence counts (truncated output). Without fences, the text itself if it looks like code."""
    blocks = [(m.group(1).lower(), m.group(2)) for m in _FENCE.finditer(text)]
    python_blocks = [code for lang, code in blocks if lang in _PY_LANGS]
    chosen = python_blocks[-1] if python_blocks else (blocks[-1][1] if blocks else None)
    if chosen is not None:
        return chosen.strip("\n") or None
    if _CODE_LINE.search(text):
        return text.strip("\n")
    return None


def extract_answer(text: str, kind: str) -> str:
    if kind == "math":
        return extract_boxed(text) or ""
    if kind == "multiple_choice":
        return extract_choice(text) or ""
    if kind == "code":
        return extract_code(text) or ""
    return text.strip()
