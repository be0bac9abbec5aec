"""Compare two `conclave eval` runs on the problems both graded, paired.

  conclave compare out/eval/humaneval-single out/eval/humaneval-mas

Prints accuracy with 95% intervals, tokens and wall time per problem, which problems only one run
solved, and an exact McNemar test of whether the difference is larger than chance. Reads only the
runs' results.jsonl; needs no running stack. --out FILE also writes the table as markdown (and
FILE with a .json suffix).

Repeated runs of the same systems average the model's sampling noise per problem:

  conclave compare base-team tuned-team --more-a base-team2 --more-b tuned-team2

counts each problem once, by the share of its runs each side got right, and tests with the exact sign
test on the problems where the shares differ (McNemar's test is its one-run case).
"""

from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_a", type=Path, help="the --out directory of the baseline run (e.g. single)")
    p.add_argument("run_b", type=Path, help="the --out directory of the run to compare (e.g. mas)")
    p.add_argument("--out", type=Path, default=None, help="also write the comparison to this markdown file")
    p.add_argument("--more-a", type=Path, action="append", default=[], metavar="DIR",
                   help="another run of the same system as RUN_A (repeatable): a pooled, per-problem comparison")
    p.add_argument("--more-b", type=Path, action="append", default=[], metavar="DIR",
                   help="another run of the same system as RUN_B (repeatable)")


def run(args: argparse.Namespace) -> int:
    from services.evaluation import compare

    try:
        if args.more_a or args.more_b:
            pooled = compare.compare_pooled_dirs([args.run_a, *args.more_a], [args.run_b, *args.more_b])
            text, data = compare.pooled_markdown(pooled), compare.pooled_to_json(pooled)
        else:
            comparison = compare.compare_dirs(args.run_a, args.run_b)
            text, data = compare.markdown(comparison), compare.to_json(comparison)
    except compare.NothingToCompare as exc:
        print(f"conclave compare: {exc}")
        return 2
    print(text)
    if args.out:
        args.out.write_text(text, encoding="utf-8")
        args.out.with_suffix(".json").write_text(data, encoding="utf-8")
    return 0
