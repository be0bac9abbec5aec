"""Benchmark loaders: bundled sets (counts from SOURCES.md), GPQA from a user file, user JSONL."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import pytest

from services.evaluation.loaders import DataError, load_benchmark, load_gpqa, load_jsonl

BENCHMARKS = Path(
    os.environ.get("CONCLAVE_BENCHMARKS_DIR", Path(__file__).resolve().parents[1].parent / "shared" / "benchmarks")
)


@pytest.mark.parametrize(("name", "count"), [("aime2024", 30), ("math500", 500), ("humaneval", 164), ("mbpp", 257)])
def test_counts_match_sources_md(name: str, count: int) -> None:
    items = load_benchmark(name, BENCHMARKS)
    assert len(items) == count
    assert len({item.id for item in items}) == count


def test_aime_fields() -> None:
    items = load_benchmark("aime2024", BENCHMARKS)
    first = items[0]
    assert first.id == "aime2024-60" and first.kind == "math"
    assert first.text.startswith("Every morning Aya goes for a $9$-kilometer-long walk")
    assert first.reference_answer == "204"
    assert all(item.reference_answer and item.reference_answer.isdigit() for item in items)


def test_math500_fields() -> None:
    items = load_benchmark("math500", BENCHMARKS)
    assert items[0].id == "math500-0000" and items[-1].id == "math500-0499"
    assert items[0].reference_answer == r"\left( 3, \frac{\pi}{2} \right)"
    assert items[0].metadata["subject"] == "Precalculus" and items[0].metadata["level"] == 2
    assert {item.metadata["level"] for item in items} == {1, 2, 3, 4, 5}


def test_humaneval_fields() -> None:
    items = load_benchmark("humaneval", BENCHMARKS)
    first = items[0]
    assert first.id == "HumanEval/0" and first.kind == "code"
    assert first.entry_point == "has_close_elements"
    assert "def check(candidate)" in (first.tests or "")
    assert first.text == first.stub and first.text.startswith("from typing import List")
    assert first.test_setup == "from typing import List"
    assert items[10].entry_point == "make_palindrome"  # two functions in the prompt; the right one


def test_mbpp_fields() -> None:
    items = load_benchmark("mbpp", BENCHMARKS)
    first = items[0]
    assert first.id == "mbpp-0000" and first.kind == "code"
    assert first.text == "Write a python function to remove first and last occurrence of a given character from the string."
    assert first.entry_point == "remove_Occ"
    assert first.stub == "def remove_Occ(s,ch):"
    assert first.tests == '\n'.join([
        'assert remove_Occ("hello","l") == "heo"',
        'assert remove_Occ("abcda","a") == "bcd"',
        'assert remove_Occ("PHP","P") == "H"',
    ])
    # Several helper names listed: the entry point is the one the tests call.
    assert items[5].entry_point == "remove_dirty_chars"
    assert items[8].entry_point == "check"
    assert sum(1 for item in items if item.test_setup == "import math") == 13
    assert all(item.entry_point and item.entry_point in (item.tests or "") for item in items)


def test_unknown_benchmark_and_missing_dir(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown benchmark"):
        load_benchmark("gsm8k", BENCHMARKS)
    with pytest.raises(DataError, match="not found"):
        load_benchmark("aime2024", tmp_path)


# ------------------------------------------------------------------------------------------- GPQA

_GPQA_ROWS = [
    {"Record ID": "rec1", "Question": "Which is a noble gas?", "Correct Answer": "Neon",
     "Incorrect Answer 1": "Sodium", "Incorrect Answer 2": "Iron", "Incorrect Answer 3": "Carbon",
     "Subdomain": "Chemistry"},
    {"Record ID": "rec2", "Question": "2 + 2 = ?", "Correct Answer": "4",
     "Incorrect Answer 1": "3", "Incorrect Answer 2": "5", "Incorrect Answer 3": "22", "Subdomain": "Math"},
]


def test_gpqa_official_csv(tmp_path: Path) -> None:
    path = tmp_path / "gpqa_diamond.csv"
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(_GPQA_ROWS[0]))
        writer.writeheader()
        writer.writerows(_GPQA_ROWS)
    items = load_gpqa(path)
    assert [item.id for item in items] == ["rec1", "rec2"]
    first = items[0]
    assert first.kind == "multiple_choice" and first.text == "Which is a noble gas?"
    assert sorted(first.options or []) == ["Carbon", "Iron", "Neon", "Sodium"]
    assert (first.options or [])[first.correct_index or 0] == "Neon"
    assert first.correct_letter == "ABCD"[first.correct_index or 0]
    assert first.metadata["Subdomain"] == "Chemistry"
    assert load_gpqa(path) == items  # the shuffle is seeded by the id: same order every time
    unshuffled = load_gpqa(path, shuffle=False)
    assert unshuffled[0].correct_index == 0 and unshuffled[0].options == ["Neon", "Sodium", "Iron", "Carbon"]


def test_gpqa_jsonl_formats(tmp_path: Path) -> None:
    path = tmp_path / "gpqa.jsonl"
    rows = [
        _GPQA_ROWS[0],
        {"Question_w_answers": "What is 3 * 3?\nA) 6\nB) 9\nC) 12\nD) 33", "Correct Answer": "9"},
        {"question": "Pick the prime.", "options": ["4", "6", "7", "8"], "answer": "C"},
        {"question": "Pick the even one.", "options": ["3", "8"], "answer": 1},
    ]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    items = load_gpqa(path)
    assert len(items) == 4
    assert (items[0].options or [])[items[0].correct_index or 0] == "Neon"
    assert items[1].text == "What is 3 * 3?" and items[1].options == ["6", "9", "12", "33"]
    assert items[1].correct_index == 1
    assert items[2].correct_index == 2 and items[3].correct_index == 1


def test_gpqa_bad_row_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "gpqa.jsonl"
    path.write_text(json.dumps(_GPQA_ROWS[0]) + "\n" + json.dumps({"Question": "incomplete"}) + "\n")
    with pytest.raises(DataError, match=r"gpqa\.jsonl:2: unrecognised GPQA row"):
        load_gpqa(path)


# ------------------------------------------------------------------------------------- user JSONL


def test_user_jsonl(tmp_path: Path) -> None:
    path = tmp_path / "mine.jsonl"
    rows = [
        {"id": 1, "kind": "math", "text": "1+1?", "reference_answer": "2"},
        {"id": "q2", "kind": "multiple_choice", "text": "Sky?", "options": ["red", "blue"], "correct_index": 1},
        {"id": "q3", "kind": "code", "text": "Write f.", "entry_point": "f",
         "tests": "def check(candidate):\n    assert candidate() == 1", "metadata": {"source": "me"}},
        {"id": "q4", "kind": "open_ended", "text": "Write a haiku."},
    ]
    path.write_text("\n".join(json.dumps(r) for r in rows[:2]) + "\n\n" + "\n".join(json.dumps(r) for r in rows[2:]))
    items = load_jsonl(path)
    assert [item.id for item in items] == ["1", "q2", "q3", "q4"]
    assert items[0].reference_answer == "2"
    assert items[1].correct_letter == "B"
    assert items[2].metadata == {"source": "me"} and items[2].test_setup == ""
    assert items[3].kind == "open_ended"


@pytest.mark.parametrize(
    ("bad_line", "message"),
    [
        ("{not json", r"mine\.jsonl:2: invalid JSON"),
        ('["a list"]', r"mine\.jsonl:2: expected a JSON object"),
        ('{"id": "x", "kind": "math", "text": "t"}', r"mine\.jsonl:2: a math item needs 'reference_answer'"),
        ('{"id": "x", "kind": "poem", "text": "t"}', r"mine\.jsonl:2: kind must be one of"),
        ('{"id": "x", "kind": "open_ended"}', r"mine\.jsonl:2: missing required key 'text'"),
        ('{"id": "x", "kind": "open_ended", "text": "t", "answer": "y"}', r"mine\.jsonl:2: unknown key\(s\) \['answer'\]"),
        ('{"id": "x", "kind": "multiple_choice", "text": "t", "options": ["a"], "correct_index": 3}',
         r"mine\.jsonl:2: 'correct_index' 3 out of range"),
        ('{"id": "x", "kind": "code", "text": "t"}', r"mine\.jsonl:2: a code item needs 'tests'"),
        ('{"id": "x", "kind": "open_ended", "text": 5}', r"mine\.jsonl:2: 'text' must be str"),
        ('{"id": "a", "kind": "open_ended", "text": "dup"}', r"mine\.jsonl:2: duplicate id 'a' \(first on line 1\)"),
    ],
)
def test_user_jsonl_errors_name_the_line(tmp_path: Path, bad_line: str, message: str) -> None:
    path = tmp_path / "mine.jsonl"
    path.write_text('{"id": "a", "kind": "open_ended", "text": "fine"}\n' + bad_line + "\n")
    with pytest.raises(DataError, match=message):
        load_jsonl(path)
