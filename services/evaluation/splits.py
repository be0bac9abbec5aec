"""Fixed, seeded halves of each bundled benchmark, for training on one and measuring on the other.

The halves are checked in (benchmarks/splits/BENCHMARK.json), so every run and every machine uses the same
ones; `make_split` is how they were made and `python -m services.evaluation.splits` rewrites them (the test
checks that the files still match it). Half "train" feeds the trainer; "heldout" is what a tuned model is
measured on, never trained on.
"""

from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path

from services.evaluation.loaders import BenchItem

HALVES = ("train", "heldout")
SEED = "conclave-split-v1"
SPLITS_DIR = Path(__file__).resolve().parents[2] / "benchmarks" / "splits"


class SplitError(ValueError):
    """No split file for this benchmark, or it names problems the benchmark lacks."""


def _rank(item_id: str) -> str:
    # A hash of seed and id, not random.shuffle: the order does not depend on Python's RNG or the file order.
    return hashlib.sha256(f"{SEED}:{item_id}".encode()).hexdigest()


def make_split(ids: list[str]) -> dict[str, list[str]]:
    """The first half (rounded down) of the ids ranked by hash is "train", the rest "heldout"."""
    ranked = sorted(set(ids), key=_rank)
    cut = len(ranked) // 2
    order = {i: n for n, i in enumerate(ids)}
    return {"train": sorted(ranked[:cut], key=order.__getitem__),
            "heldout": sorted(ranked[cut:], key=order.__getitem__)}


def load_split(benchmark: str, splits_dir: Path = SPLITS_DIR) -> dict[str, list[str]]:
    path = splits_dir / f"{benchmark}.json"
    if not path.exists():
        raise SplitError(f"no split for {benchmark!r} (expected {path}); bundled benchmarks only")
    doc = json.loads(path.read_text(encoding="utf-8"))
    return {h: doc[h] for h in HALVES}


def select(items: list[BenchItem], benchmark: str, half: str, splits_dir: Path = SPLITS_DIR) -> list[BenchItem]:
    """The items of one half, in benchmark order."""
    if half not in HALVES:
        raise SplitError(f"unknown half {half!r}; use one of {', '.join(HALVES)}")
    wanted = set(load_split(benchmark, splits_dir)[half])
    chosen = [i for i in items if i.id in wanted]
    if len(chosen) != len(wanted):
        missing = sorted(wanted - {i.id for i in chosen})[:3]
        raise SplitError(f"split {benchmark}/{half} names {len(wanted) - len(chosen)} problems the data lacks "
                         f"(e.g. {missing}); is the data dir the bundled one?")
    return chosen


def main(argv: list[str] | None = None) -> int:
    from services.cli.eval_cmd import default_data_dir
    from services.evaluation.loaders import load_benchmark

    p = argparse.ArgumentParser(prog="python -m services.evaluation.splits", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", type=Path, default=None, help="benchmark data dir (default ../shared/benchmarks)")
    p.add_argument("--out", type=Path, default=SPLITS_DIR)
    args = p.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    for name in ("aime2024", "math500", "humaneval", "mbpp"):
        ids = [i.id for i in load_benchmark(name, args.data_dir or default_data_dir())]
        halves = make_split(ids)
        doc = {"benchmark": name, "seed": SEED, "method": "sha256(seed:id) order; first half train",
               "problems": len(ids), **{h: halves[h] for h in HALVES}}
        (args.out / f"{name}.json").write_text(json.dumps(doc, indent=1) + "\n", encoding="utf-8")
        print(f"{name}: {len(halves['train'])} train, {len(halves['heldout'])} heldout")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
