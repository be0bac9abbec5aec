"""Answer extraction and grading: math (math-verify), multiple choice, code (sandboxed)."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from services.evaluation.graders import (
    extract_boxed,
    extract_choice,
    extract_code,
    grade_choice,
    grade_code,
    grade_math,
    shuffle_options,
)
from services.evaluation.loaders import load_benchmark

BENCHMARKS = Path(
    os.environ.get("CONCLAVE_BENCHMARKS_DIR", Path(__file__).resolve().parents[1].parent / "shared" / "benchmarks")
)

# ------------------------------------------------------------------------------------------ boxed


def test_extract_boxed_takes_the_last_and_matches_nested_braces() -> None:
    assert extract_boxed(r"first \boxed{1} then \boxed{\frac{a}{b^{2}}}.") == r"\frac{a}{b^{2}}"
    assert extract_boxed(r"\fbox{x{y}z}") == "x{y}z"
    assert extract_boxed(r"set \boxed{\{1, 2\}}") == r"\{1, 2\}"  # escaped braces are not grouping
    assert extract_boxed(r"\boxed 7 is it") == "7"
    assert extract_boxed(r"\boxed{3} and an unclosed \boxed{4") == "3"
    assert extract_boxed("no box here") is None


# ------------------------------------------------------------------------------------------- math


@pytest.mark.parametrize(
    ("answer", "reference", "expected"),
    [
        (r"so \boxed{0.5}", r"\frac{1}{2}", True),
        (r"\boxed{1/2}", "0.5", True),
        (r"\boxed{\dfrac12}", r"\frac{1}{2}", True),
        (r"\boxed{\frac{1}{3}}", "0.5", False),
        (r"\boxed{(0, 1]}", "(0,1]", True),
        (r"\boxed{[0,1]}", "(0,1]", False),
        (r"\boxed{10\text{ cm}}", "10", True),
        (r"\boxed{10}", r"10\text{ cm}", True),
        (r"\boxed{11\text{ cm}}", "10", False),
        (r"\boxed{30^\circ}", "30", True),
        (r"\boxed{\frac{270}{7}}", r"\frac{270}7\text{ degrees}", True),
        # Several answers in one box are an unordered set; all of them are needed.
        (r"\boxed{2, 3}", "3,2", True),
        (r"\boxed{2}", "2, 3", False),
        (r"\boxed{2, 4}", "2, 3", False),
        # Only the last box counts.
        (r"\boxed{5} no wait, \boxed{7}", "7", True),
        (r"\boxed{5} no wait, \boxed{7}", "5", False),
        # Text answers compare as words, not as products of symbols.
        (r"\boxed{Evelyn}", r"\text{Evelyn}", True),
        (r"\boxed{Nevely}", r"\text{Evelyn}", False),
        (r"\boxed{C}", r"\text{(C)}", True),
        (r"\boxed{\text{(B)}}", r"\text{(C)}", False),
        (r"\boxed{x^2+2x+1}", "(x+1)^2", True),
        (r"\boxed{\sqrt{\frac{1}{4}}}", r"\frac12", True),
        (r"\boxed{104.}", "104", True),
        (r"\boxed{\textbf{(073)}}", "073", True),
        ("The final answer is 42", "42", True),
        ("I give up", "42", False),
    ],
)
def test_grade_math(answer: str, reference: str, expected: bool) -> None:
    assert grade_math(answer, reference) is expected


def test_grade_math_require_boxed() -> None:
    assert grade_math("The final answer is 42", "42", require_boxed=True) is False
    assert grade_math(r"\boxed{42}", "42", require_boxed=True) is True


def test_grade_math_from_a_worker_thread() -> None:
    """math-verify's SIGALRM timeouts would raise outside the main thread; grading must still work."""
    results: list[object] = []

    def work() -> None:
        try:
            results.append((grade_math(r"\boxed{\dfrac12}", "0.5"), grade_math(r"\boxed{3}", "0.5")))
        except Exception as e:  # noqa: BLE001 - the assertion below reports it
            results.append(e)

    thread = threading.Thread(target=work)
    thread.start()
    thread.join(timeout=60)
    assert results == [(True, False)]


def test_math500_reference_solutions_grade_correct() -> None:
    items = load_benchmark("math500", BENCHMARKS)[:60]
    assert all(grade_math(item.metadata["solution"], item.reference_answer or "") for item in items)


# ---------------------------------------------------------------------------------------- choices


@pytest.mark.parametrize(
    ("text", "letter"),
    [
        ("After weighing everything, the answer is (B).", "B"),
        ("Answer: C", "C"),
        ("**Final answer: D**", "D"),
        (r"Therefore \boxed{A}", "A"),
        (r"so it is \boxed{\text{(C)}}", "C"),
        ("I first thought (A), but the answer is B.", "B"),
        ("Options considered.\n\nD\n", "D"),
        ("I think the second one", None),
    ],
)
def test_extract_choice(text: str, letter: str | None) -> None:
    assert extract_choice(text) == letter


def test_grade_choice() -> None:
    assert grade_choice("The answer is (c)", "C")
    assert not grade_choice("The answer is (A)", "C")
    assert not grade_choice("no idea", "C")


def test_shuffle_options_is_deterministic_per_seed() -> None:
    options = ["right", "wrong 1", "wrong 2", "wrong 3"]
    first = shuffle_options(options, 0, seed="item-17")
    assert first == shuffle_options(list(options), 0, seed="item-17")
    shuffled, letter = first
    assert sorted(shuffled) == sorted(options)
    assert shuffled["ABCD".index(letter)] == "right"
    # Different items get different orders (not all 20 the same), and an int seed works like its str.
    orders = {tuple(shuffle_options(options, 0, seed=f"item-{i}")[0]) for i in range(20)}
    assert len(orders) > 1
    assert shuffle_options(options, 0, seed=5) == shuffle_options(options, 0, seed="5")
    with pytest.raises(ValueError):
        shuffle_options(options, 4, seed=1)


# ------------------------------------------------------------------------------------------- code


def test_extract_code() -> None:
    text = "First:\n```python\nx = 1\n```\nBetter:\n```python\ndef f():\n    return 2\n```\nDone."
    assert extract_code(text) == "def f():\n    return 2"
    assert extract_code("```\nprint(1)\n```") == "print(1)"
    assert extract_code("```python\ndef g():\n    return 3\n```\n```text\noutput\n```") == "def g():\n    return 3"
    assert extract_code("Here:\n```python\ndef cut():\n    return 1") == "def cut():\n    return 1"
    assert extract_code("def raw(a):\n    return a\n") == "def raw(a):\n    return a"
    assert extract_code("Just prose, no code at all.") is None


@pytest.fixture(scope="module")
def humaneval_item():  # type: ignore[no-untyped-def]
    return load_benchmark("humaneval", BENCHMARKS)[0]


@pytest.fixture(scope="module")
def mbpp_item():  # type: ignore[no-untyped-def]
    return next(i for i in load_benchmark("mbpp", BENCHMARKS) if i.test_setup)  # one that needs `import math`


async def test_grade_code_humaneval_canonical_passes(humaneval_item) -> None:  # type: ignore[no-untyped-def]
    item = humaneval_item
    answer = "Here you go:\n```python\n" + item.stub + item.metadata["canonical_solution"] + "\n```"
    grade = await grade_code(answer, tests=item.tests, entry_point=item.entry_point, test_setup=item.test_setup)
    assert grade.passed and grade.status == "passed", grade


async def test_grade_code_humaneval_wrong_fails(humaneval_item) -> None:  # type: ignore[no-untyped-def]
    item = humaneval_item
    wrong = f"```python\ndef {item.entry_point}(numbers, threshold):\n    return False\n```"
    grade = await grade_code(wrong, tests=item.tests, entry_point=item.entry_point, test_setup=item.test_setup)
    assert not grade.passed and grade.status == "failed"
    assert "AssertionError" in grade.output


async def test_grade_code_completion_of_the_stub(humaneval_item) -> None:  # type: ignore[no-untyped-def]
    item = humaneval_item
    grade = await grade_code(item.metadata["canonical_solution"], tests=item.tests, entry_point=item.entry_point,
                             test_setup=item.test_setup, stub=item.stub)
    assert grade.passed, grade


async def test_grade_code_early_exit_does_not_pass(humaneval_item) -> None:  # type: ignore[no-untyped-def]
    item = humaneval_item
    cheat = f"```python\nimport sys\ndef {item.entry_point}(*a):\n    return None\nsys.exit(0)\n```"
    grade = await grade_code(cheat, tests=item.tests, entry_point=item.entry_point)
    assert not grade.passed, grade


async def test_grade_code_mbpp(mbpp_item) -> None:  # type: ignore[no-untyped-def]
    item = mbpp_item
    right = "```python\n" + item.metadata["reference_code"] + "\n```"
    grade = await grade_code(right, tests=item.tests, entry_point=item.entry_point, test_setup=item.test_setup)
    assert grade.passed, grade
    wrong = f"```python\ndef {item.entry_point}(*args):\n    return 0\n```"
    grade = await grade_code(wrong, tests=item.tests, entry_point=item.entry_point, test_setup=item.test_setup)
    assert not grade.passed and grade.status == "failed"


async def test_grade_code_timeout_and_no_code(humaneval_item) -> None:  # type: ignore[no-untyped-def]
    from services.sandbox import SandboxLimits

    item = humaneval_item
    slow = f"```python\ndef {item.entry_point}(*a):\n    while True:\n        pass\n```"
    grade = await grade_code(slow, tests=item.tests, entry_point=item.entry_point,
                             limits=SandboxLimits(cpu_s=5, wall_s=1))
    assert not grade.passed and grade.status == "timeout"
    grade = await grade_code("I could not solve it.", tests=item.tests, entry_point=item.entry_point)
    assert not grade.passed and grade.status == "no_code"
