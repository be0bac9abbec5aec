"""The live view and CLI basics: escaped model text, parsed verdicts, set-aside stops, --version, missing data."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import pytest
from rich.console import Console

from conclave.v1 import agents_pb2, outcome_pb2
from services.cli.main import build_parser, main, version
from services.cli.render import print_result, render_event
from services.cli.up_cmd import pod_argv, pod_threads

A = agents_pb2.CeoDecision


def shown(*events: outcome_pb2.ProgressEvent) -> str:
    out = io.StringIO()
    console = Console(file=out, width=200, color_system=None)
    for ev in events:
        render_event(console, ev)
    return out.getvalue()


@pytest.mark.parametrize("hostile", ["closing a tag that was never opened [/i] here",
                                     "escaped \\[bold] stays as written", "[red]not red[/red] [link=x]y[/link]",
                                     "a :smile: code and a [/] alone"])
def test_model_text_with_markup_prints_verbatim_and_never_raises(hostile):
    ev = outcome_pb2.ProgressEvent(type="message", role=agents_pb2.ROLE_SOLVER, persona=hostile, text=hostile,
                                   tokens=5)
    text = shown(ev)
    assert hostile in text.split("\n", 1)[1]
    assert f"({hostile}, 5 tok)" in text


def test_each_critic_shows_its_verdict_as_counted_and_a_fallback_review_says_why():
    text = shown(
        outcome_pb2.ProgressEvent(type="message", role=agents_pb2.ROLE_CRITIC, persona="checker",
                                  text="reasons... [Agree]", agree=True),
        outcome_pb2.ProgressEvent(type="message", role=agents_pb2.ROLE_CRITIC, persona="skeptic",
                                  text="reasons... [Disagree]", agree=False),
        outcome_pb2.ProgressEvent(type="message", role=agents_pb2.ROLE_CRITIC, persona="terse", text="[Disagree]",
                                  agree=True, fallback=True,
                                  fallback_reason="a review needs reasons before its tag, not a bare tag"),
    )
    lines = [ln for ln in text.splitlines() if "critic" in ln]
    assert lines[0].endswith("→ agree")
    assert lines[1].endswith("→ disagree")
    assert "→ counted as agree (fallback: a review needs reasons before its tag, not a bare tag)" in lines[2]


def test_a_stop_before_any_solution_is_shown_as_set_aside_and_a_fallback_decision_says_why():
    stop = outcome_pb2.ProgressEvent(
        type="decision", role=agents_pb2.ROLE_CEO, turn=1,
        decision=A(action=A.ACTION_STOP, recruit_number=2, max_tokens=1024, direction="Looks done."),
        set_aside="stop set aside: there is no solution yet, so the team carries on")
    fallback = outcome_pb2.ProgressEvent(
        type="decision", role=agents_pb2.ROLE_CEO, turn=2, fallback=True,
        fallback_reason="no 'Decision:' line",
        decision=A(action=A.ACTION_CONTINUE, recruit_number=4, max_tokens=8192, fallback=True))
    text = shown(stop, fallback)
    assert "CEO stop: N=2 K=1024 — Looks done." in text
    assert "stop set aside: there is no solution yet, so the team carries on" in text
    assert "CEO continue: N=4 K=8192 (fallback: no 'Decision:' line)" in text


def test_a_result_with_markup_in_its_answer_prints_verbatim():
    out = io.StringIO()
    r = outcome_pb2.Result(status="ok", answer="x", extracted_answer="[/i] \\boxed{5}", turns=1, correct=0)
    print_result(Console(file=out, width=200, color_system=None), r)
    assert "[/i] \\boxed{5}" in out.getvalue() and "wrong" in out.getvalue()


def test_version_prints_the_installed_version(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out.strip() == f"conclave {version()}"
    assert version()[0].isdigit()


def test_eval_without_data_is_one_clear_line(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "services.cli.main", "eval", "--benchmark", "math500",
                           "--data-dir", str(tmp_path / "nowhere")], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "benchmark dir not found" in lines[0] and "--data-dir" in lines[0] and "README" in lines[0]


def test_the_cpu_pod_leaves_a_core_to_the_services_when_there_are_enough():
    assert pod_threads(2) == 2 and pod_threads(4) == 3 and pod_threads(16) == 15


def test_up_passes_threads_and_poll_to_the_cpu_pod():
    args = build_parser().parse_args(["up", "--threads", "1", "--poll", "10"])
    argv = pod_argv(args)
    assert argv[argv.index("--threads") + 1] == "1" and argv[argv.index("--poll") + 1] == "10"
    default = pod_argv(build_parser().parse_args(["up"]))
    assert default[default.index("--poll") + 1] == "0"
    assert int(default[default.index("--threads") + 1]) == pod_threads()


def test_up_with_a_port_taken_says_which_and_how_to_move_it_and_starts_nothing(tmp_path):
    import socket

    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        proc = subprocess.run([sys.executable, "-m", "services.cli.main", "up", "--door-port", str(port),
                               "--state-dir", str(tmp_path / "state"), "--nats-url", "nats://127.0.0.1:1"],
                              capture_output=True, text=True, timeout=120,
                              env={**os.environ, "CONCLAVE_GRPC_PORT": "0"})
    assert proc.returncode == 2, proc.stderr
    out = proc.stdout + proc.stderr
    assert f"port {port} (the OpenAI-compatible door) is in use" in out and "--door-port" in out
    assert not (tmp_path / "state").exists()  # no NATS, no certificates, no pod: nothing was started


def test_a_matched_vote_says_what_it_will_spend_before_it_starts(tmp_path):
    run = Path(__file__).resolve().parents[1] / "docs/gpu-runs/2026-12-07b-qwen0.5b-loop-v2/base-verified-all"
    argv = [sys.executable, "-m", "services.cli.main", "eval", "--benchmark", "math500", "--mode", "vote", "--k",
            "auto", "--match", str(run), "--limit", "2", "--out", str(tmp_path / "v"), "--nats-url",
            "nats://127.0.0.1:1"]
    # No NATS there: it says its cost first, then that no stack answers; the cost line is what we need.
    proc = subprocess.Popen(argv, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    try:
        err = ""
        for _ in range(20):  # past any warning an import may print first
            err = proc.stderr.readline()
            if err.startswith("vote --k auto") or not err:
                break
    finally:
        proc.kill()
        proc.wait(timeout=30)
        proc.stderr.close()
    # the two problems' tokens in the matched run (3 399 and 43 030), said before it tries to connect
    assert "about 46,429 tokens for 2 problems (23,214 a problem, at most 64 samples each)" in err, err


def test_eval_without_a_stack_is_one_clear_line_at_once(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "services.cli.main", "eval", "--benchmark", "math500", "--limit", "1",
                           "--out", str(tmp_path / "e"), "--nats-url", "nats://127.0.0.1:1"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines()[-1] == ("conclave eval: no NATS server answers at nats://127.0.0.1:1; "
                                                    "start the stack (`conclave up`) or pass --nats-url")
