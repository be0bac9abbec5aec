"""Benchmark loaders: the bundled files (see SOURCES.md in the benchmarks dir), GPQA from a path the
user supplies (never shipped), and the user's own JSONL.

Accepted GPQA files (`load_gpqa`):
- the official CSV (or a JSONL with the same keys): `Question`, `Correct Answer`,
  `Incorrect Answer 1..3`, optional `Record ID`. Options are shuffled per item, seeded by its id.
- the MAS-TTS JSONL: `Question_w_answers` (the question with "A) ..." to "D) ..." lines) and
  `Correct Answer`; options are read from those lines, in their order.
- a generic JSONL: `question`, `options` (list), `answer` (a letter, a 0-based index, or the option text).

User JSONL (`load_jsonl`): one object per line (blank lines skipped), keys:
  id (str|int, unique), kind ("math" | "multiple_choice" | "code" | "open_ended"), text (str),
  and optionally reference_answer (str), options (list[str]), correct_index (int, 0-based),
  entry_point (str), tests (str), test_setup (str), stub (str), metadata (object).
  multiple_choice needs options and correct_index; code needs tests (and entry_point when the tests
  define check(candidate)); math needs reference_answer. Unknown keys are errors (typos would
  otherwise silently drop data).
"""

from __future__ import annotations

import csv
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from services.evaluation.graders import CHOICE_LETTERS, shuffle_options
from services.protocol import kinds

Kind = str  # one of KINDS
KINDS: tuple[str, ...] = kinds.NAMES
BENCHMARKS: dict[str, str] = {"aime2024": "aime2024", "math500": "math500", "humaneval": "humaneval",
                              "mbpp": "mbpp_sanitized", "mbpp_sanitized": "mbpp_sanitized"}


@dataclass
class BenchItem:
    id: str
    kind: Kind
    text: str
    reference_answer: str | None = None
    options: list[str] | None = None
    correct_index: int | None = None
    entry_point: str | None = None
    tests: str | None = None
    test_setup: str = ""
    stub: str | None = None  # code the answer completes (a signature); see graders.grade_code
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def correct_letter(self) -> str | None:
        return None if self.correct_index is None else CHOICE_LETTERS[self.correct_index]


class DataError(ValueError):
    """A benchmark file is missing or malformed; the message names the file (and line)."""


# ------------------------------------------------------------------------------------- bundled sets


def load_benchmark(name: str, data_dir: str | Path) -> list[BenchItem]:
    """Items of a bundled benchmark: aime2024, math500, humaneval or mbpp, read from `data_dir`."""
    key = name.lower()
    if key not in BENCHMARKS:
        raise ValueError(f"unknown benchmark {name!r}; known: {', '.join(sorted(set(BENCHMARKS) - {'mbpp_sanitized'}))}")
    directory = Path(data_dir) / BENCHMARKS[key]
    if not directory.is_dir():
        raise DataError(f"benchmark dir not found: {directory}")
    loader = {"aime2024": _aime, "math500": _math500, "humaneval": _humaneval}.get(key, _mbpp)
    try:
        return loader(directory)
    except KeyError as e:
        raise DataError(f"{directory}: a row lacks the field {e}; is this the format SOURCES.md describes?") from None


def _aime(directory: Path) -> list[BenchItem]:
    return [
        BenchItem(id=f"aime2024-{row['id']}", kind="math", text=row["problem"], reference_answer=str(row["answer"]),
                  metadata={"source_id": row["id"], "url": row.get("url"), "solution": row.get("solution")})
        for _, row in _read_jsonl(directory / "test.jsonl")
    ]


def _math500(directory: Path) -> list[BenchItem]:
    return [
        BenchItem(id=f"math500-{i:04d}", kind="math", text=row["problem"], reference_answer=row["answer"],
                  metadata={"subject": row.get("subject"), "level": row.get("level"), "solution": row.get("solution")})
        for i, (_, row) in enumerate(_read_jsonl(directory / "test.jsonl"))
    ]


def _humaneval(directory: Path) -> list[BenchItem]:
    items = []
    for _, row in _read_jsonl(directory / "test.jsonl"):
        prompt = row["prompt"]
        items.append(BenchItem(
            id=row["task_id"], kind="code", text=prompt, entry_point=row["entry_point"], tests=row["test"],
            # The prompt's imports (typing.List, math): answers often restate only the function.
            test_setup=_leading_imports(prompt), stub=prompt,
            metadata={"canonical_solution": row.get("canonical_solution")},
        ))
    return items


def _mbpp(directory: Path) -> list[BenchItem]:
    names_path = directory / "function_names.csv"
    names = _read_csv_rows(names_path) if names_path.exists() else []
    items = []
    for i, (lineno, row) in enumerate(_read_jsonl(directory / "test.jsonl")):
        tests = "\n".join(row["test_list"])
        candidates = [n for n in (names[i] if i < len(names) else []) if n]
        entry_point = _called_in(candidates, tests) or _last_def(row.get("code_header", ""))
        if not entry_point:
            raise DataError(f"{directory / 'test.jsonl'}:{lineno}: cannot tell the function under test")
        items.append(BenchItem(
            id=f"mbpp-{i:04d}", kind="code", text=row["prompt"], entry_point=entry_point, tests=tests,
            test_setup="\n".join(row.get("test_imports") or []), stub=row.get("code_header") or None,
            metadata={"reference_code": row.get("code"), "prompt_w_code_header": row.get("prompt_w_code_header"),
                      "test_list": list(row["test_list"])},
        ))
    return items


def _leading_imports(source: str) -> str:
    return "\n".join(line for line in source.splitlines() if re.match(r"(?:import|from)\s+\w", line))


def _called_in(names: list[str], tests: str) -> str | None:
    called = [n for n in names if re.search(rf"\b{re.escape(n)}\s*\(", tests)]
    return called[0] if len(called) == 1 else None


def _last_def(code: str) -> str | None:
    defs = re.findall(r"def\s+(\w+)\s*\(", code)
    return defs[-1] if defs else None


# --------------------------------------------------------------------------------------------- GPQA

_OPTION_LINE = re.compile(rf"^\s*\(?([{CHOICE_LETTERS}])[).:]\s*(.+?)\s*$", re.M)


def load_gpqa(path: str | Path, *, shuffle: bool = True) -> list[BenchItem]:
    """GPQA from a user-supplied CSV or JSONL (formats in the module docstring)."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"GPQA file not found: {path}")
    if path.suffix.lower() == ".csv":
        with path.open(newline="", encoding="utf-8") as f:
            rows = [(n + 2, row) for n, row in enumerate(csv.DictReader(f))]  # +2: header, 1-based
    else:
        rows = _read_jsonl(path)
    return [_gpqa_item(path, lineno, i, row, shuffle) for i, (lineno, row) in enumerate(rows)]


def _gpqa_item(path: Path, lineno: int, index: int, row: dict, shuffle: bool) -> BenchItem:
    where = f"{path}:{lineno}"
    item_id = str(row.get("Record ID") or row.get("id") or f"gpqa-{index:04d}")
    incorrect = [row.get(f"Incorrect Answer {k}") for k in (1, 2, 3)]
    if row.get("Question") and row.get("Correct Answer") and all(incorrect):
        options = [_clean(row["Correct Answer"]), *(_clean(x) for x in incorrect)]  # type: ignore[arg-type]
        if shuffle:
            options, letter = shuffle_options(options, 0, seed=item_id)
            correct = CHOICE_LETTERS.index(letter)
        else:
            correct = 0
        return BenchItem(id=item_id, kind="multiple_choice", text=_clean(row["Question"]), options=options,
                         correct_index=correct, metadata=_gpqa_meta(row))
    if row.get("Question_w_answers") and row.get("Correct Answer"):
        text = row["Question_w_answers"]
        found = _OPTION_LINE.findall(text)
        options = [opt for _, opt in found]
        if [letter for letter, _ in found] != list(CHOICE_LETTERS[: len(found)]) or len(options) < 2:
            raise DataError(f"{where}: could not read the A), B), ... option lines in Question_w_answers")
        target = _clean(row["Correct Answer"])
        matches = [k for k, opt in enumerate(options) if _clean(opt) == target]
        if len(matches) != 1:
            raise DataError(f"{where}: 'Correct Answer' is not exactly one of the listed options")
        question = text[: _OPTION_LINE.search(text).start()].strip()  # type: ignore[union-attr]
        return BenchItem(id=item_id, kind="multiple_choice", text=question, options=options,
                         correct_index=matches[0], metadata=_gpqa_meta(row))
    if row.get("question") and isinstance(row.get("options"), list) and "answer" in row:
        options = [str(o) for o in row["options"]]
        return BenchItem(id=item_id, kind="multiple_choice", text=str(row["question"]), options=options,
                         correct_index=_answer_index(row["answer"], options, where), metadata=_gpqa_meta(row))
    raise DataError(
        f"{where}: unrecognised GPQA row; expected Question/Correct Answer/Incorrect Answer 1-3, "
        "Question_w_answers/Correct Answer, or question/options/answer"
    )


def _gpqa_meta(row: dict) -> dict[str, Any]:
    keep = ("Subdomain", "High-level domain", "Record ID", "Explanation")
    return {k: row[k] for k in keep if row.get(k)}


def _answer_index(answer: Any, options: list[str], where: str) -> int:
    if isinstance(answer, int) and 0 <= answer < len(options):
        return answer
    text = str(answer).strip()
    letter = text.strip("()").rstrip(").:").upper()
    if len(letter) == 1 and letter in CHOICE_LETTERS[: len(options)]:
        return CHOICE_LETTERS.index(letter)
    if text in options:
        return options.index(text)
    raise DataError(f"{where}: answer {answer!r} is neither a letter, an index nor one of the options")


def _clean(s: str) -> str:
    return " ".join(str(s).split())


# ---------------------------------------------------------------------------------------- user JSONL

_FIELD_TYPES: dict[str, tuple[type, ...]] = {
    "id": (str, int), "kind": (str,), "text": (str,), "reference_answer": (str, int, float),
    "options": (list,), "correct_index": (int,), "entry_point": (str,), "tests": (str,),
    "test_setup": (str,), "stub": (str,), "metadata": (dict,),
}


def load_jsonl(path: str | Path) -> list[BenchItem]:
    """Items from the user's JSONL (schema in the module docstring); errors name the line."""
    path = Path(path)
    items: list[BenchItem] = []
    seen: dict[str, int] = {}
    for lineno, row in _read_jsonl(path):
        item = _user_item(row, f"{path}:{lineno}")
        if item.id in seen:
            raise DataError(f"{path}:{lineno}: duplicate id {item.id!r} (first on line {seen[item.id]})")
        seen[item.id] = lineno
        items.append(item)
    return items


def _user_item(row: dict, where: str) -> BenchItem:
    unknown = sorted(set(row) - set(_FIELD_TYPES))
    if unknown:
        raise DataError(f"{where}: unknown key(s) {unknown}; allowed: {sorted(_FIELD_TYPES)}")
    for key in ("id", "kind", "text"):
        if key not in row or row[key] in (None, ""):
            raise DataError(f"{where}: missing required key {key!r}")
    for key, value in row.items():
        if value is not None and (not isinstance(value, _FIELD_TYPES[key]) or isinstance(value, bool)):
            names = " or ".join(t.__name__ for t in _FIELD_TYPES[key])
            raise DataError(f"{where}: {key!r} must be {names}, got {type(value).__name__}")
    kind = row["kind"]
    if kind not in KINDS:
        raise DataError(f"{where}: kind must be one of {list(KINDS)}, got {kind!r}")
    options = row.get("options")
    if options is not None and not all(isinstance(o, str) for o in options):
        raise DataError(f"{where}: 'options' must be a list of strings")
    if kind == "multiple_choice":
        if not options or row.get("correct_index") is None:
            raise DataError(f"{where}: a multiple_choice item needs 'options' and 'correct_index'")
        if not 0 <= row["correct_index"] < len(options) or len(options) > len(CHOICE_LETTERS):
            raise DataError(f"{where}: 'correct_index' {row['correct_index']} out of range for {len(options)} options")
    if kind == "code":
        if not row.get("tests"):
            raise DataError(f"{where}: a code item needs 'tests'")
        if re.search(r"^def\s+check\s*\(", row["tests"], re.M) and not row.get("entry_point"):
            raise DataError(f"{where}: tests define check(candidate), so 'entry_point' is required")
    if kind == "math" and row.get("reference_answer") in (None, ""):
        raise DataError(f"{where}: a math item needs 'reference_answer'")
    ref = row.get("reference_answer")
    return BenchItem(
        id=str(row["id"]), kind=kind, text=row["text"], reference_answer=None if ref is None else str(ref),
        options=options, correct_index=row.get("correct_index"), entry_point=row.get("entry_point"),
        tests=row.get("tests"), test_setup=row.get("test_setup") or "", stub=row.get("stub"),
        metadata=dict(row.get("metadata") or {}),
    )


# ------------------------------------------------------------------------------------------- files


def _read_jsonl(path: Path) -> list[tuple[int, dict]]:
    """(line number, object) for each non-blank line."""
    if not path.exists():
        raise DataError(f"file not found: {path}")
    rows = []
    with path.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(f"{path}:{lineno}: invalid JSON: {e.msg} (column {e.colno})") from None
            if not isinstance(row, dict):
                raise DataError(f"{path}:{lineno}: expected a JSON object, got {type(row).__name__}")
            rows.append((lineno, row))
    return rows


def _read_csv_rows(path: Path) -> list[list[str]]:
    with path.open(newline="", encoding="utf-8") as f:
        return list(csv.reader(f))[1:]  # the first row is a header of column numbers
