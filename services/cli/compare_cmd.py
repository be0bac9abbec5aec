"""Compare two `conclave eval` runs on the problems both graded, paired.

  conclave compare out/eval/humaneval-single out/eval/humaneval-mas

Prints accuracy with 95% intervals, tokens and wall time per problem, which problems only one run
solved, and an exact McNemar test of whether the difference is larger than chance. Reads only the
runs' results.jsonl; needs no running stack. --out FILE also writes the table as markdown (and
FILE with a .json suffix).
"""

from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_a", type=Path, help="the --out directory of the baseline run (e.g. single)")
    p.add_argument("run_b", type=Path, help="the --out directory of the run to compare (e.g. mas)")
    p.add_argument("--out", type=Path, default=None, help="also write the comparison to this markdown file")


def run(args: argparse.Namespace) -> int:
    from services.evaluation.compare import NothingToCompare, compare_dirs, markdown, to_json

    try:
        comparison = compare_dirs(args.run_a, args.run_b)
    except NothingToCompare as exc:
        print(f"conclave compare: {exc}")
        return 2
    text = markdown(comparison)
    print(text)
    if args.out:
        args.out.write_text(text, encoding="utf-8")
        args.out.with_suffix(".json").write_text(to_json(comparison), encoding="utf-8")
    return 0
