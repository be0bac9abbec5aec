"""Run a benchmark through the agent team (or the single-agent baseline), grade it, and write a report.

Benchmarks: aime2024, math500, humaneval, mbpp (read from --data-dir, default ../shared/benchmarks or
CONCLAVE_BENCHMARKS_DIR), gpqa (from --gpqa PATH only; never shipped), or jsonl (--file PATH, the
schema in docs/problems.md). Writes OUT/results.jsonl, OUT/report.md, OUT/report.json and PNG plots.
Rerunning with the same --out resumes that run (the problems already graded are skipped); --rerun starts
a fresh one, whose problem ids are new, so no stored result of an earlier run (another model's) is reused.
--model and --revision are recorded in OUT/run.json and the report; resuming with others is refused.

Held-out halves (benchmarks/splits/, fixed and seeded): --split train or --split heldout.

Code benchmarks hide their grading tests from the team by default (--executor-tests model): the
executor writes its own tests, as in the paper, so the team gets no hint the single agent lacks.

Sweeps vary one or more of the paper's scaling axes and write OUT/sweep.md:
  conclave eval --benchmark math500 --limit 20 --sweep turns=1,2,3 --sweep team=2,3

Single against team, paired, with a significance test:
  conclave compare out/eval/humaneval-single out/eval/humaneval-mas

Majority vote of the single agent (self-consistency), the baseline a team must beat at equal tokens:
  conclave eval --benchmark math500 --mode vote --k 8 --out out/eval/math500-vote8
  conclave eval --benchmark math500 --mode vote --k auto --match out/eval/math500-mas --out out/eval/math500-vote-matched
  conclave compare out/eval/math500-vote-matched out/eval/math500-mas
With --k auto each problem gets samples until it has spent about what the --match run spent on it.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import sys
from pathlib import Path

from services.bus.address import nats_url_from_env

AXES = {"turns": "max_turns", "rounds": "critic_rounds", "team": "team_size", "k": "k_cap"}


def default_data_dir() -> Path:
    env = os.environ.get("CONCLAVE_BENCHMARKS_DIR")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[2].parent / "shared" / "benchmarks"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--benchmark", required=True, choices=["aime2024", "math500", "humaneval", "mbpp", "gpqa", "jsonl"])
    p.add_argument("--limit", type=int, default=0, help="first N problems only")
    p.add_argument("--mode", choices=["mas", "single", "vote"], default="mas",
                   help="agent team, single-agent baseline, or majority vote of K single-agent samples")
    p.add_argument("--k", default="8", metavar="K|auto",
                   help="--mode vote: samples per problem, or auto to match the tokens of the --match run "
                        "problem by problem (default 8)")
    p.add_argument("--match", type=Path, default=None, metavar="RUN_DIR",
                   help="--mode vote --k auto: the --out directory of the run (e.g. the team) whose tokens to match")
    p.add_argument("--k-max", type=int, default=64, help="--mode vote: the most samples one problem may get")
    p.add_argument("--profile", default="", help="profile (default: the benchmark's own)")
    p.add_argument("--concurrency", type=int, default=4,
                   help="problems in flight at once (--mode vote: each with its K samples in flight together)")
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
    p.add_argument("--split", choices=["train", "heldout"], default="",
                   help="run one half of the benchmark's fixed split (benchmarks/splits/BENCHMARK.json)")
    p.add_argument("--rerun", action="store_true",
                   help="a fresh run in --out: new problem ids, earlier results moved to results.RUNID.jsonl")
    p.add_argument("--model", default=os.environ.get("CONCLAVE_EVAL_MODEL", ""),
                   help="name of the model the pods serve, recorded in the report (env CONCLAVE_EVAL_MODEL)")
    p.add_argument("--revision", default=os.environ.get("CONCLAVE_EVAL_REVISION", ""),
                   help="its revision (a checkpoint hash, a commit), recorded too (env CONCLAVE_EVAL_REVISION)")
    p.add_argument("--nats-url", default=nats_url_from_env())


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
        items = load_benchmark(args.benchmark, data_dir)
    except DataError as exc:
        how = "--data-dir" if args.data_dir else ("CONCLAVE_BENCHMARKS_DIR" if os.environ.get(
            "CONCLAVE_BENCHMARKS_DIR") else "the default ../shared/benchmarks")
        raise SystemExit(f"conclave eval: {exc} (data dir from {how}); benchmark data is not shipped with "
                         "Conclave: see README, 'Benchmark data', for where to get it") from None
    if getattr(args, "split", ""):
        from services.evaluation.splits import select

        items = select(items, args.benchmark, args.split)
    return items


def parse_sweep(specs: list[str]) -> list[dict[str, int]]:
    axes: list[tuple[str, list[int]]] = []
    for spec in specs:
        name, _, values = spec.partition("=")
        if name not in AXES or not values:
            raise SystemExit(f"bad --sweep {spec!r}: use AXIS=V1,V2 with AXIS in {', '.join(AXES)}")
        axes.append((name, [int(v) for v in values.split(",")]))
    return [dict(zip([a for a, _ in axes], combo, strict=True)) for combo in itertools.product(*(v for _, v in axes))]


def vote_settings(args: argparse.Namespace):
    """--mode vote's settings, checked before anything starts (None for the other modes)."""
    if args.mode != "vote":
        return None
    from services.evaluation.vote import settings_for

    try:
        return settings_for(args.k, args.match, args.k_max)
    except (ValueError, FileNotFoundError) as exc:
        raise SystemExit(f"conclave eval: {exc}") from exc


def vote_solver(settings, out: Path) -> dict:
    """run_eval's solver for --mode vote; nothing to add for the other modes."""
    if settings is None:
        return {}
    from services.evaluation.vote import VoteSolver

    out.mkdir(parents=True, exist_ok=True)
    return {"solver": VoteSolver(settings, out)}


async def _eval(args: argparse.Namespace) -> int:
    from services.bus import permissions
    from services.cli.progress import progress
    from services.evaluation import report
    from services.evaluation.runner import RunMismatch, RunSettings, open_run, run_eval

    vote = vote_settings(args)
    items = load_items(args)
    if vote is not None and vote.k == 0:
        # A matched vote spends what the matched run spent: say it before the first sample is drawn.
        todo = items[:args.limit] if args.limit else items
        total = sum(vote.targets.get(item.id, vote.default_target) for item in todo)
        print(f"vote --k auto: matching {args.match}'s tokens, about {total:,.0f} tokens for {len(todo)} problems "
              f"({total / max(len(todo), 1):,.0f} a problem, at most {args.k_max} samples each)", file=sys.stderr)
    default_profile = {"mbpp": "mbpp", "humaneval": "humaneval", "math500": "math500", "aime2024": "aime2024",
                       "gpqa": "gpqa"}.get(args.benchmark, "")
    if args.split and args.benchmark in ("gpqa", "jsonl"):
        raise SystemExit("--split works with the bundled benchmarks only")
    vote_label = f"-k{args.k}" if args.mode == "vote" else ""
    split_label = f"-{args.split}" if args.split else ""
    base_out = args.out or Path("out/eval") / f"{args.benchmark}-{args.mode}{vote_label}{split_label}"
    points = parse_sweep(args.sweep) or [{}]
    from services.client.connect import connect
    from services.stack.natsd import nats_answers

    # nats.py would keep retrying a first connection for about two minutes; a missing stack is one line.
    if not nats_answers(args.nats_url, timeout=3):
        raise SystemExit(f"conclave eval: no NATS server answers at {args.nats_url}; start the stack "
                         "(`conclave up`) or pass --nats-url")
    # Grading reads trajectories, which the public `client` credential may not.
    nc = await connect(args.nats_url, user=permissions.ADMIN, connect_timeout=3)
    rows = []
    try:
        for point in points:
            settings = RunSettings(
                benchmark=args.benchmark, mode=args.mode, profile=args.profile or default_profile, limit=args.limit,
                concurrency=args.concurrency, timeout_s=args.timeout,
                max_turns=point.get("turns", args.max_turns), critic_rounds=point.get("rounds", 0),
                team_size=point.get("team", 0), k_cap=point.get("k", 0), executor_tests=args.executor_tests,
                require_passing_tests=args.require_passing_tests, split=args.split, model=args.model,
                revision=args.revision,
            )
            out = base_out / "_".join(f"{k}{v}" for k, v in point.items()) if point else base_out
            try:
                settings = open_run(out, settings, rerun=args.rerun)
            except RunMismatch as exc:
                raise SystemExit(str(exc)) from None
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

                graded = await run_eval(nc, items, settings, out, on_graded, **vote_solver(vote, out))
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
