"""Build the SFT data set from the archive: the M500 selection, as chat samples, one JSON line each.

  python -m trainer.dataset --archive .state/archive --out m500.jsonl
  python -m trainer.dataset --archive .state/archive --grades out/eval/humaneval-mas/results.jsonl --out m500.jsonl

Lines keep each problem's samples together and in generation order. --grades takes `conclave eval`
results: code graded by held-back tests is marked ungraded in its trajectory, and the eval knows the grade.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from trainer.archive import ArchiveError, ArchiveReader
from trainer.m500 import RELAXABLE, select
from trainer.samples import Sample, samples_of


def load_grades(paths: list[Path]) -> dict[str, int]:
    """problem_id -> 1/0 from `conclave eval` results.jsonl files."""
    from services.evaluation.runner import load_done

    grades: dict[str, int] = {}
    for path in paths:
        if not path.is_file():
            raise SystemExit(f"{path}: no such file; give the results.jsonl of a `conclave eval` --out directory")
        try:
            done = load_done(path)
        except (json.JSONDecodeError, TypeError) as exc:
            raise SystemExit(f"{path}: not `conclave eval` results ({exc})") from exc
        grades.update({g.problem_id: int(g.correct) for g in done.values()})
    return grades


def graded(trajectories, grades: dict[str, int]):
    for traj in trajectories:
        if traj.problem.id in grades:
            traj.result.correct = grades[traj.problem.id]
        yield traj


def build(archive: Path, grades: dict[str, int], allow: tuple[str, ...] = ()) -> tuple[list[Sample], str]:
    reader = ArchiveReader(archive)
    selection = select(graded(reader, grades), allow)
    samples = [s for traj in selection.kept for s in samples_of(traj)]
    summary = selection.summary()
    if reader.unreadable:
        summary += f"; {len(reader.unreadable)} unreadable files skipped ({', '.join(reader.unreadable[:5])})"
    return samples, summary


def write(samples: list[Sample], out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", encoding="utf-8") as f:
        for s in samples:
            f.write(json.dumps(s.to_json(), ensure_ascii=False) + "\n")


def read(path: Path) -> list[Sample]:
    return [Sample.from_json(json.loads(line)) for line in path.read_text(encoding="utf-8").splitlines() if line]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m trainer.dataset", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--archive", type=Path, required=True, help="the archiver's directory of trajectory files")
    p.add_argument("--out", type=Path, required=True, help="JSONL file to write")
    p.add_argument("--grades", type=Path, action="append", default=[], metavar="RESULTS_JSONL",
                   help="`conclave eval` results.jsonl whose grades override the trajectories' (repeatable)")
    p.add_argument("--allow", action="append", default=[], choices=RELAXABLE,
                   help="also keep trajectories that fail only this check (not the paper's recipe; a small "
                        "model rarely keeps the format in every message)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname).1s %(name)s: %(message)s")
    try:
        samples, summary = build(args.archive, load_grades(args.grades), tuple(args.allow))
    except ArchiveError as exc:
        print(f"trainer.dataset: {exc}", file=sys.stderr)
        return 2
    write(samples, args.out)
    problems = len({s.problem_id for s in samples})
    print(f"{summary}\n{len(samples)} samples from {problems} problems written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
