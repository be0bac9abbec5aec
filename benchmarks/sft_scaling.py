"""SFT scaling: trainer.sft's tokens/s on N processes (torchrun, FSDP) against 1 process, in one invocation.

  # the recorded multi-GPU run (docs/gpu.md, "Multi-GPU"): a model that fits one GPU, so that 1 is a baseline
  python benchmarks/sft_scaling.py --nproc 2 --base-model /models/Qwen2.5-1.5B-Instruct --data m500.jsonl
  # the plumbing on a CPU: gloo, a random tiny model and made-up data (trainer/tiny.py); the ratio means nothing
  python benchmarks/sft_scaling.py --nproc 2 --tiny

The baseline is trainer.sft as one plain process (one GPU, unsharded, as it always ran); the other run is
torchrun with --nproc processes (FSDP2 over NCCL on GPUs, gloo on the CPU). Both take the same --steps
optimizer steps of the same --global-batch from the same data, with checkpoints and the final save off.
tokens/s counts every token of the forward passes (padding excluded) over the steps after --warmup-steps,
summed over the ranks. Prints a table and the ratio N/1 (the issue's goal: at least 1.8 on 2 GPUs), and
writes OUT/sft_scaling.json; each run's metrics.jsonl and log are under OUT/. Arguments after `--` go to
both runs of trainer.sft (e.g. -- --lora-rank 16 --seq-len 8192).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import REPO, child_env  # noqa: E402


def launch(nproc: int) -> list[str]:
    if nproc == 1:
        return [sys.executable]
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}"]


def run_sft(nproc: int, out: Path, train_args: list[str], timeout: float) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    cmd = [*launch(nproc), "-m", "trainer.sft", *train_args, "--output", str(out), "--no-save", "--save-every", "0"]
    print(f"== {nproc} process{'es' if nproc > 1 else ''}: {' '.join(cmd)}", flush=True)
    t0 = time.perf_counter()
    with (out / "log.txt").open("w") as log:
        proc = subprocess.run(cmd, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, timeout=timeout,
                              env=child_env({}))
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        tail = (out / "log.txt").read_text(errors="replace")[-3000:]
        raise SystemExit(f"trainer.sft on {nproc} processes failed ({proc.returncode}); {out / 'log.txt'} ends:\n{tail}")
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return {"nproc": nproc, "rows": rows, "wall_s": round(wall, 1)}


def throughput(rows: list[dict], warmup: int) -> dict:
    """tokens/s over the steps after `warmup` (the first steps pay for allocation and compilation)."""
    timed = rows[warmup:] or rows
    tokens = sum(r["tokens"] for r in timed)
    seconds = sum(r["tokens"] / r["tokens_per_s"] for r in timed if r["tokens_per_s"])
    return {"steps": len(timed), "tokens": tokens, "seconds": round(seconds, 3),
            "tokens_per_s": round(tokens / seconds, 1) if seconds else 0.0,
            "trained_tokens": sum(r["trained_tokens"] for r in timed)}


def tiny_setup(out: Path) -> list[str]:
    from trainer import dataset, tiny

    tiny.make_model(out / "tiny" / "model")
    dataset.write(tiny.make_samples(problems=24, max_words=200), out / "tiny" / "data.jsonl")
    return ["--base-model", str(out / "tiny" / "model"), "--data", str(out / "tiny" / "data.jsonl"), "--fp32",
            "--no-gradient-checkpointing", "--seq-len", "1024", "--global-batch", "8", "--micro-batch", "2",
            "--lr", "1e-3"]


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    extra: list[str] = []
    if "--" in argv:
        at = argv.index("--")
        argv, extra = argv[:at], argv[at + 1:]
    p = argparse.ArgumentParser(prog="python benchmarks/sft_scaling.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--nproc", type=int, default=2, help="processes (GPUs) of the scaled run; the baseline has 1")
    p.add_argument("--base-model", help="a local model directory that fits one GPU (full fine-tuning or LoRA)")
    p.add_argument("--data", type=Path, help="JSONL from python -m trainer.dataset")
    p.add_argument("--tiny", action="store_true", help="a random tiny model and made-up data on the CPU (plumbing)")
    p.add_argument("--steps", type=int, default=20, help="optimizer steps of each run")
    p.add_argument("--warmup-steps", type=int, default=3, help="first steps left out of tokens/s")
    p.add_argument("--global-batch", type=int, default=16)
    p.add_argument("--out", type=Path, default=Path("out/bench/sft_scaling"))
    p.add_argument("--timeout", type=float, default=3600, help="seconds each run may take")
    args = p.parse_args(argv)
    if args.nproc < 2:
        p.error("--nproc must be at least 2 (the baseline is 1)")
    try:
        import torch  # noqa: F401
        import transformers  # noqa: F401
    except ImportError:
        print("sft_scaling needs torch and transformers: pip install -e '.[train]'", file=sys.stderr)
        return 2
    if args.tiny:
        train_args = tiny_setup(args.out)
    elif args.base_model and args.data:
        train_args = ["--base-model", args.base_model, "--data", str(args.data), "--global-batch", str(args.global_batch)]
    else:
        p.error("give --base-model and --data, or --tiny")
    train_args += ["--max-steps", str(args.steps), *extra]
    runs = [run_sft(n, args.out / f"nproc{n}", train_args, args.timeout) for n in (1, args.nproc)]
    results = [{"nproc": r["nproc"], "wall_s": r["wall_s"], **throughput(r["rows"], args.warmup_steps)} for r in runs]
    base, scaled = results
    ratio = scaled["tokens_per_s"] / base["tokens_per_s"] if base["tokens_per_s"] else 0.0
    print(f"\n{'processes':>9} {'steps':>5} {'tokens':>10} {'seconds':>9} {'tokens/s':>10} {'wall s':>7}")
    for r in results:
        print(f"{r['nproc']:>9} {r['steps']:>5} {r['tokens']:>10} {r['seconds']:>9.2f} {r['tokens_per_s']:>10.1f} "
              f"{r['wall_s']:>7.1f}")
    print(f"\ntokens/s on {args.nproc} processes / 1 process: {ratio:.3f} (scaling efficiency "
          f"{ratio / args.nproc:.0%}; the goal on 2 GPUs: >= 1.8){' -- CPU plumbing run: not a figure' if args.tiny else ''}")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "sft_scaling.json").write_text(json.dumps(
        {"runs": results, "ratio": round(ratio, 4), "nproc": args.nproc, "tiny": args.tiny,
         "train_args": train_args}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
