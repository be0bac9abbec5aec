"""trainer.sft under torchrun: 2 processes, FSDP2 over the gloo backend on the CPU, a tiny random model
(trainer/tiny.py). Checks the metrics files (rank 0 only), sharded checkpoints, and that a run stopped
and resumed from its checkpoint trains exactly as one that ran through.

Needs torch and transformers, which `make test` does not install (CI has neither: skipped there):
  .venv/bin/pip install torch==2.13.0 transformers
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from trainer import dataset, tiny  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("tiny")
    tiny.make_model(root / "model")
    dataset.write(tiny.make_samples(problems=10), root / "data.jsonl")
    return root


def sft(root: Path, out: str, *extra: str, nproc: int = 2) -> subprocess.CompletedProcess[str]:
    launcher = ([sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}"]
                if nproc > 1 else [sys.executable])
    cmd = [*launcher, "-m", "trainer.sft", "--data", str(root / "data.jsonl"), "--base-model", str(root / "model"),
           "--output", str(root / out), "--fp32", "--global-batch", "8", "--micro-batch", "2", "--epochs", "2",
           "--lr", "1e-3", "--seq-len", "256", *extra]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"{' '.join(cmd)}\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    return proc


def metrics(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_two_ranks_train_checkpoint_and_resume_exactly_even_on_one_process(tiny_run: Path) -> None:
    whole = sft(tiny_run, "whole", "--save-every", "2")
    rows = metrics(tiny_run / "whole" / "metrics.jsonl")
    steps = len(rows)
    assert [r["step"] for r in rows] == list(range(1, steps + 1)) and steps >= 4  # one row per step: rank 0 only
    assert all(r["ranks"] == 2 and r["trained_tokens"] > 0 for r in rows)
    assert whole.stdout.count("training on") == 1
    assert rows[-1]["loss"] < rows[0]["loss"]
    summary = json.loads((tiny_run / "whole" / "summary.json").read_text())
    assert summary["ranks"] == 2 and summary["steps"] == steps
    kept = sorted(p.name for p in (tiny_run / "whole" / "checkpoints").iterdir())
    assert len(kept) == 2 and all((tiny_run / "whole" / "checkpoints" / k / "trainer_state.json").is_file() for k in kept)
    assert (tiny_run / "whole" / "final" / "config.json").is_file()

    # The same run, stopped after 3 steps (a checkpoint) and resumed: the same losses, the same weights.
    sft(tiny_run, "halves", "--stop-after", "3")
    assert "stopped_after" in json.loads((tiny_run / "halves" / "summary.json").read_text())
    assert not (tiny_run / "halves" / "final").exists()
    shutil.copytree(tiny_run / "halves", tiny_run / "moved")
    resumed = sft(tiny_run, "halves", "--resume")
    assert "resumed from" in resumed.stdout
    again = metrics(tiny_run / "halves" / "metrics.jsonl")
    assert [r["step"] for r in again] == [r["step"] for r in rows]
    for a, b in zip(rows, again, strict=True):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-4, abs=1e-5), (a, b)
    from transformers import AutoModelForCausalLM

    w1 = AutoModelForCausalLM.from_pretrained(tiny_run / "whole" / "final").state_dict()
    w2 = AutoModelForCausalLM.from_pretrained(tiny_run / "halves" / "final").state_dict()
    assert w1.keys() == w2.keys()
    assert all(torch.allclose(w1[k], w2[k], atol=1e-5) for k in w1)



    # The 2-rank checkpoint resumed on one process: the weights and optimizer state reshard.
    one = sft(tiny_run, "moved", "--resume", "--no-save", nproc=1)
    assert "resumed from" in one.stdout and "saved by 2 ranks, resuming on 1" in one.stderr
    rows = metrics(tiny_run / "moved" / "metrics.jsonl")
    assert [r.get("ranks") for r in rows[:3]] == [2, 2, 2] and all("ranks" not in r for r in rows[3:])
    assert len(rows) == steps
