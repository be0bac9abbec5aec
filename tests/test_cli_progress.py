"""Long batch commands show progress even when their output goes to a log file instead of a terminal."""

from __future__ import annotations

import io

from services.cli.progress import LineProgress, progress


def test_without_a_terminal_every_update_is_a_line_with_the_count_and_the_note():
    log = io.StringIO()  # not a tty, like nohup's output, CI or a Kubernetes Job's log
    with progress("humaneval mas", total=40, done=12, stream=log) as view:
        view.update(13, 40, "HumanEval/12 correct")
        view.update(14, 40, "HumanEval/13 wrong (max_turns)")
    lines = log.getvalue().splitlines()
    assert isinstance(view, LineProgress)
    assert lines[0].startswith("humaneval mas: 12/40 (30%) 0m00s starting")
    assert lines[1].startswith("humaneval mas: 13/40 (32%)") and lines[1].endswith("HumanEval/12 correct")
    assert lines[2].endswith("HumanEval/13 wrong (max_turns)")
    assert len(lines) == 3


def test_an_empty_batch_has_no_percentage_to_divide_by():
    log = io.StringIO()
    with progress("submit", total=0, stream=log):
        pass
    assert log.getvalue().startswith("submit: 0/0 (-)")
