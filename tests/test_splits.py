"""benchmarks/splits: fixed, seeded, disjoint halves of each bundled benchmark, and `conclave eval --split`."""

from __future__ import annotations

import argparse
import json

import pytest

from services.cli.eval_cmd import default_data_dir, load_items
from services.evaluation.loaders import BenchItem, load_benchmark
from services.evaluation.splits import HALVES, SPLITS_DIR, SplitError, load_split, make_split, select

BENCHMARKS = ("aime2024", "math500", "humaneval", "mbpp")


@pytest.mark.parametrize("name", BENCHMARKS)
def test_the_checked_in_halves_are_disjoint_cover_the_benchmark_and_match_the_seeded_rule(name):
    halves = load_split(name)
    train, heldout = set(halves["train"]), set(halves["heldout"])
    assert not train & heldout and abs(len(train) - len(heldout)) <= 1
    data = default_data_dir()
    if not data.is_dir():
        pytest.skip(f"benchmark data not found at {data}")
    ids = [i.id for i in load_benchmark(name, data)]
    assert train | heldout == set(ids)
    assert make_split(ids) == halves  # the files are what the seeded rule gives: nobody picked problems


def test_the_split_does_not_depend_on_the_order_of_the_file():
    ids = [f"p{i}" for i in range(41)]
    a, b = make_split(ids), make_split(list(reversed(ids)))
    assert {h: set(v) for h, v in a.items()} == {h: set(v) for h, v in b.items()}
    assert len(a["train"]) == 20 and len(a["heldout"]) == 21


def test_select_keeps_benchmark_order_and_refuses_foreign_data(tmp_path):
    (tmp_path / "toy.json").write_text(json.dumps({"train": ["b", "d"], "heldout": ["a", "c"]}))
    items = [BenchItem(id=i, kind="math", text=i, reference_answer="1") for i in "abcd"]
    assert [i.id for i in select(items, "toy", "heldout", tmp_path)] == ["a", "c"]
    with pytest.raises(SplitError, match="names 1 problems the data lacks"):
        select(items[:3], "toy", "train", tmp_path)
    with pytest.raises(SplitError, match="unknown half"):
        select(items, "toy", "test", tmp_path)
    with pytest.raises(SplitError, match="no split for 'gpqa'"):
        load_split("gpqa", tmp_path)


def test_eval_split_argument_loads_one_half():
    data = default_data_dir()
    if not data.is_dir():
        pytest.skip(f"benchmark data not found at {data}")
    args = argparse.Namespace(benchmark="math500", data_dir=None, split="heldout", gpqa=None, file=None)
    items = load_items(args)
    assert [i.id for i in items] == load_split("math500")["heldout"] and len(items) == 250
    assert set(HALVES) == {"train", "heldout"} and (SPLITS_DIR / "math500.json").exists()
