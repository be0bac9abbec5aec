"""The CEO grades math in a process of its own, with a hard time limit, never on its event loop."""

from __future__ import annotations

import asyncio

import pytest

from ceo.grading import MAX_REFERENCE_CHARS, MathGrader

pytestmark = pytest.mark.asyncio


async def test_symbolic_grading_runs_off_the_loop_and_an_overrun_is_left_ungraded():
    slow = MathGrader(timeout_s=0.001)  # less than starting the grading process takes
    try:
        assert await slow.grade("So \\boxed{\\frac{1}{2}}.", "0.5") == -1
    finally:
        await slow.close()
    grader = MathGrader(timeout_s=120)
    try:
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                await asyncio.sleep(0.01)
                ticks += 1

        beat = asyncio.create_task(ticker())
        assert await grader.grade("So \\boxed{\\frac{1}{2}}.", "0.5") == 1
        assert await grader.grade("So \\boxed{3}.", "0.5") == 0
        beat.cancel()
        assert ticks > 0  # the loop kept running while sympy worked
    finally:
        await grader.close()


async def test_equal_text_and_oversized_references_need_no_sympy():
    grader = MathGrader(timeout_s=0.001)  # would time out if it started the grading process
    try:
        assert await grader.grade("The answer is \\boxed{42}.", "42") == 1
        assert await grader.grade("\\boxed{1}", "1" * (MAX_REFERENCE_CHARS + 1)) == -1
    finally:
        await grader.close()
