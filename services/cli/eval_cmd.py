"""Run a benchmark through the agent team (or the single-agent baseline), grade it, and write a report.

Benchmarks: aime2024, math500, humaneval, mbpp (read from --data-dir, default ../shared/benchmarks or
CONCLAVE_BENCHMARKS_DIR), gpqa (from --gpqa PATH only; never shipped), or jsonl (--file PATH, the
schema in docs/problems.md). Writes OUT/results.jsonl, OUT/report.md, OUT/report.json and PNG plots.
Rerunning with the same --out skips the problems already graded.

Code benchmarks hide their grading tests from the team by default (--executor-tests model): the
executor writes its own tests, as in the paper, so the team gets no hint the single agent lacks.

Sweeps vary one or more of the paper's scaling axes and write OUT/sweep.md:
  conclave eval --benchmark math500 --limit 20 --sweep turns=1,2,3 --sweep team=2,3

Single against team, paired, with a significance test:
  conclave compare out/eval/humaneval-single out/eval/humaneval-mas
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
from pathlib import Path

AXES = {"turns": "max_turns", "rounds": "critic_rounds", "team": "team_size", "k": "k_cap"}


def default_data_dir() -> Path:
    env = os.environ.get("CONCLAVE_BENCHMARKS_DIR")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[2].parent / "shared" / "benchmarks"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--benchmark", required=True, choices=["aime2024", "math500", "humaneval", "mbpp", "gpqa", "jsonl"])
    p.add_argument("--limit", type=int, default=0, help="first N problems only")
    p.add_argument("--mode", choices=["mas", "single"], default="mas", help="agent team or single-agent baseline")
    p.add_argument("--profile", default="", help="profile (default: the benchmark's own)")
    p.add_argument("--concurrency", type=int, default=4, help="problems in flight at once")
    p.add_argument("--out", type=Path, default=None, help="output dir (default out/eval/BENCHMARK-MODE)")
    p.add_argument("--data-dir", type=Path, default=None,
                   help="directory holding aime2024/, math500/, humaneval/, mbpp_sanitized/ (default: "
                        "$CONCLAVE_BENCHMARKS_DIR, else ../shared/benchmarks beside the repository); not "
                        "shipped: README, 'Benchmark data', says where each comes from")
    p.add_argument("--gpqa", type=Path, default=None, help="path of a GPQA file (CSV or JSONL) you have")
    p.add_argument("--file", type=Path, default=None, help="your own JSONL (with --benchmark jsonl)")
    p.add_argument("--timeout", type=float, default=3600, help="seconds to wait for each result")
    p.add_argument("--max-turns", type=int, default=0)
    p.add_argument("--executor-tests", choices=["model", "dataset"], default="model",
                   help="code benchmarks: model = the executor writes its own tests and the grading tests stay "
                        "hidden from the team (the paper's setting, fair against single); dataset = the executor "
                        "runs the grading tests, so the team sees their outcome before it is graded")
    p.add_argument("--require-passing-tests", action="store_true",
                   help="code: a turn is accepted only if the evaluator says correct and the executor's tests "
                        "pass (not the paper's protocol, where the evaluator alone decides)")
    p.add_argument("--sweep", action="append", default=[], metavar="AXIS=V1,V2",
                   help=f"sweep an axis: {', '.join(AXES)} (repeatable: the grid of all values)")
    p.add_argument("--nats-url", default=os.environ.get("CONCLAVE_NATS_URL", "nats://127.0.0.1:4222"))


def load_items(args: argparse.Namespace):
    from services.evaluation.loaders import DataError, load_benchmark, load_gpqa, load_jsonl

    if args.benchmark == "gpqa":
        if not args.gpqa:
            raise SystemExit("GPQA is not shipped: pass --gpqa PATH to a copy you have")
        return load_gpqa(args.gpqa)
    if args.benchmark == "jsonl":
        if not args.file:
            raise SystemExit("--benchmark jsonl needs --file PATH")
        return load_jsonl(args.file)
    data_dir = args.data_dir or default_data_dir()
    try:
        return load_benchmark(args.benchmark, data_dir)
    except DataError as exc:
        how = "--data-dir" if args.data_dir else ("CONCLAVE_BENCHMARKS_DIR" if os.environ.get(
            "CONCLAVE_BENCHMARKS_DIR") else "the default ../shared/benchmarks")
        raise SystemExit(f"conclave eval: {exc} (data dir from {how}); benchmark data is not shipped with "
                         "Conclave: see README, 'Benchmark data', for where to get it") from None


def parse_sweep(specs: list[str]) -> list[dict[str, int]]:
    axes: list[tuple[str, list[int]]] = []
    for spec in specs:
        name, _, values = spec.partition("=")
        if name not in AXES or not values:
            raise SystemExit(f"bad --sweep {spec!r}: use AXIS=V1,V2 with AXIS in {', '.join(AXES)}")
        axes.append((name, [int(v) for v in values.split(",")]))
    return [dict(zip([a for a, _ in axes], combo, strict=True)) for combo in itertools.product(*(v for _, v in axes))]


async def _eval(args: argparse.Namespace) -> int:
    import nats

    from services.cli.progress import progress
    from services.evaluation import report
    from services.evaluation.runner import RunSettings, run_eval

    items = load_items(args)
    default_profile = {"mbpp": "mbpp", "humaneval": "humaneval", "math500": "math500", "aime2024": "aime2024",
                       "gpqa": "gpqa"}.get(args.benchmark, "")
    base_out = args.out or Path("out/eval") / f"{args.benchmark}-{args.mode}"
    points = parse_sweep(args.sweep) or [{}]
    nc = await nats.connect(args.nats_url, connect_timeout=3)
    rows = []
    try:
        for point in points:
            settings = RunSettings(
                benchmark=args.benchmark, mode=args.mode, profile=args.profile or default_profile, limit=args.limit,
                concurrency=args.concurrency, timeout_s=args.timeout,
                max_turns=point.get("turns", args.max_turns), critic_rounds=point.get("rounds", 0),
                team_size=point.get("team", 0), k_cap=point.get("k", 0), executor_tests=args.executor_tests,
                require_passing_tests=args.require_passing_tests,
            )
            out = base_out / "_".join(f"{k}{v}" for k, v in point.items()) if point else base_out
            label = " ".join(f"{k}={v}" for k, v in point.items()) or args.mode
            with progress(f"{args.benchmark} {label}", args.limit or len(items)) as view:
                correct = [0]

                def on_graded(g, done, total, view=view, correct=correct, out=out):
                    if g is None:
                        if done:
                            view.update(done, total, f"{done} already graded in {out}, skipped")
                        return
                    correct[0] += g.correct
                    verdict = "correct" if g.correct else f"wrong ({g.stop_reason})"
                    view.update(done, total, f"{g.id} {verdict}; {correct[0]} correct this run")

                graded = await run_eval(nc, items, settings, out, on_graded)
            summary = report.write(out, settings, graded)
            rows.append((point, summary))
            print(f"{label}: {summary.get('correct', 0)}/{summary.get('problems', 0)} correct "
                  f"({summary.get('accuracy', 0):.1%}), {summary.get('tokens_per_problem', 0):.0f} tokens/problem; "
                  f"report in {out}/report.md")
        if len(points) > 1 or args.sweep:
            report.write_sweep(base_out, rows)
            print(f"sweep table in {base_out}/sweep.md")
    finally:
        await nc.close()
    return 0


def run(args: argparse.Namespace) -> int:
    return asyncio.run(_eval(args))
