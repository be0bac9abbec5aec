"""Supervised fine-tuning on the M500 selection of archived discussions (the paper's M500 -> M1 step).

  python -m trainer.sft --archive .state/archive --base-model /models/Qwen2.5-32B-Instruct --output out/m1
  python -m trainer.sft --data m500.jsonl --base-model /models/qwen0.5b --lora-rank 16 --epochs 1

One process, one GPU (or the CPU for a tiny model). Loss on assistant tokens only, averaged over the
trained tokens of each global batch. Every step prints a progress line and appends a JSON line to
OUTPUT/metrics.jsonl. Needs the `train` extra (torch, transformers; peft for --lora-rank).
Not here: multi-GPU sharding (the paper used DeepSpeed ZeRO-3 with offload for full fine-tuning of 32B).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trainer.encode import IGNORE, Encoded, EncodeError, encode
from trainer.order import epoch_order
from trainer.samples import Sample
from trainer.settings import TrainSettings

log = logging.getLogger("trainer.sft")


def lr_at(step: int, total: int, peak: float, warmup_ratio: float) -> float:
    """Linear warmup to `peak`, then cosine decay to 0 at `total` steps."""
    warmup = max(1, math.ceil(total * warmup_ratio)) if warmup_ratio > 0 else 0
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return peak * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def load_samples(cfg: TrainSettings) -> list[Sample]:
    from trainer import dataset

    if cfg.data:
        return dataset.read(cfg.data)
    if cfg.archive:
        samples, summary = dataset.build(cfg.archive, dataset.load_grades(cfg.grades))
        log.info("%s", summary)
        return samples
    raise SystemExit("give --data (from python -m trainer.dataset) or --archive")


@dataclass
class Prepared:
    samples: list[Sample]
    encoded: list[Encoded]
    skipped: dict[str, int]


def prepare(samples: list[Sample], tokenizer: Any, seq_len: int) -> Prepared:
    kept_s, kept_e, skipped = [], [], {}
    for s in samples:
        try:
            e = encode(tokenizer, s.messages, seq_len)
        except EncodeError as exc:
            skipped[exc.reason] = skipped.get(exc.reason, 0) + 1
            continue
        if e.trained_tokens:
            kept_s.append(s)
            kept_e.append(e)
    return Prepared(kept_s, kept_e, skipped)


def batches(order: list[int], size: int) -> list[list[int]]:
    return [order[i:i + size] for i in range(0, len(order), size)]


def run(cfg: TrainSettings) -> dict:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(cfg.seed)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = torch.bfloat16 if cfg.bf16 else torch.float32
    tokenizer = AutoTokenizer.from_pretrained(cfg.base_model, local_files_only=True)
    prepared = prepare(load_samples(cfg), tokenizer, cfg.seq_len)
    if not prepared.encoded:
        raise SystemExit(f"no trainable samples (skipped: {prepared.skipped or 'none'})")
    model = AutoModelForCausalLM.from_pretrained(cfg.base_model, dtype=dtype, local_files_only=True).to(device)
    if cfg.gradient_checkpointing:
        model.gradient_checkpointing_enable()
        model.config.use_cache = False
    if cfg.lora_rank:
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(model, LoraConfig(r=cfg.lora_rank, lora_alpha=cfg.lora_alpha, task_type="CAUSAL_LM",
                                                 target_modules="all-linear"))
        if cfg.gradient_checkpointing:
            model.enable_input_require_grads()
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=0.0)
    steps_per_epoch = math.ceil(len(prepared.encoded) / cfg.global_batch)
    total = cfg.max_steps or cfg.epochs * steps_per_epoch
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    cfg.output.mkdir(parents=True, exist_ok=True)
    metrics_path = cfg.output / "metrics.jsonl"
    metrics_path.write_text("", encoding="utf-8")
    print(f"training on {len(prepared.encoded)} samples from {len({s.problem_id for s in prepared.samples})} "
          f"problems ({sum(e.trained_tokens for e in prepared.encoded)} trained tokens); skipped: "
          f"{prepared.skipped or 'none'}; {total} steps of {cfg.global_batch} samples on {device}", flush=True)

    step, started, trained_total, history = 0, time.perf_counter(), 0, []
    for epoch in range(cfg.epochs if not cfg.max_steps else 10**9):
        for batch in batches(epoch_order(prepared.samples, epoch, cfg.seed), cfg.global_batch):
            if step >= total:
                break
            for group in optimizer.param_groups:
                group["lr"] = lr_at(step, total, cfg.lr, cfg.warmup_ratio)
            t0 = time.perf_counter()
            n_trained = sum(prepared.encoded[i].trained_tokens for i in batch)
            n_tokens, loss_sum = 0, 0.0
            for micro in batches(batch, cfg.micro_batch):
                seqs = [prepared.encoded[i] for i in micro]
                width = max(len(e.input_ids) for e in seqs)
                ids = torch.full((len(seqs), width), pad, dtype=torch.long)
                labels = torch.full((len(seqs), width), IGNORE, dtype=torch.long)
                mask = torch.zeros((len(seqs), width), dtype=torch.long)
                for row, e in enumerate(seqs):
                    ids[row, : len(e.input_ids)] = torch.tensor(e.input_ids)
                    labels[row, : len(e.labels)] = torch.tensor(e.labels)
                    mask[row, : len(e.input_ids)] = 1
                ids, labels, mask = ids.to(device), labels.to(device), mask.to(device)
                with torch.autocast(device_type=device, dtype=dtype, enabled=cfg.bf16):
                    logits = model(input_ids=ids, attention_mask=mask).logits
                # Sum over this micro batch's trained tokens, divided by the whole global batch's count:
                # every trained token weighs the same, however the samples are split into micro batches.
                loss = torch.nn.functional.cross_entropy(
                    logits[:, :-1].flatten(0, 1).float(), labels[:, 1:].flatten(), ignore_index=IGNORE,
                    reduction="sum") / n_trained
                loss.backward()
                loss_sum += loss.item()
                n_tokens += int(mask.sum())
            grad_norm = float(torch.nn.utils.clip_grad_norm_(params, 1.0))
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            if device == "cuda":
                torch.cuda.synchronize()
            step += 1
            trained_total += n_trained
            dt = time.perf_counter() - t0
            row = {"step": step, "epoch": epoch + 1, "loss": round(loss_sum, 5), "lr": optimizer.param_groups[0]["lr"],
                   "grad_norm": round(grad_norm, 4), "samples": len(batch), "tokens": n_tokens,
                   "trained_tokens": n_trained, "tokens_per_s": round(n_tokens / dt, 1),
                   "elapsed_s": round(time.perf_counter() - started, 2)}
            history.append(row)
            with metrics_path.open("a", encoding="utf-8") as f:
                f.write(json.dumps(row) + "\n")
            print(f"step {step}/{total} epoch {epoch + 1} loss {loss_sum:.4f} lr {row['lr']:.2e} "
                  f"grad {grad_norm:.2f} {row['tokens_per_s']:.0f} tok/s", flush=True)
        if step >= total:
            break
    summary = {"steps": step, "first_loss": history[0]["loss"], "last_loss": history[-1]["loss"],
               "trained_tokens": trained_total, "seconds": round(time.perf_counter() - started, 2),
               "samples": len(prepared.encoded), "skipped": prepared.skipped, "device": device,
               "peak_memory_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2) if device == "cuda" else None}
    if cfg.save:
        final = cfg.output / "final"
        model.save_pretrained(final)
        tokenizer.save_pretrained(final)
        summary["saved"] = str(final)
    (cfg.output / "summary.json").write_text(json.dumps(summary, indent=2), encoding="utf-8")
    print(json.dumps(summary), flush=True)
    return summary


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m trainer.sft", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    defaults = {name: f.default for name, f in TrainSettings.model_fields.items()}
    p.add_argument("--data", type=Path, help="JSONL from python -m trainer.dataset")
    p.add_argument("--archive", type=Path, help="or build the M500 data from this archive directory")
    p.add_argument("--grades", type=Path, action="append", default=[], help="`conclave eval` results.jsonl")
    p.add_argument("--base-model", required=True, help=TrainSettings.model_fields["base_model"].description)
    p.add_argument("--output", type=Path, default=defaults["output"])
    for name in ("epochs", "global_batch", "micro_batch", "max_steps", "lora_rank", "lora_alpha", "seq_len", "seed"):
        p.add_argument(f"--{name.replace('_', '-')}", type=int, default=defaults[name],
                       help=TrainSettings.model_fields[name].description or f"default {defaults[name]}")
    p.add_argument("--lr", type=float, default=defaults["lr"])
    p.add_argument("--warmup-ratio", type=float, default=defaults["warmup_ratio"])
    p.add_argument("--no-gradient-checkpointing", dest="gradient_checkpointing", action="store_false")
    p.add_argument("--fp32", dest="bf16", action="store_false", help="train in float32 (default bf16)")
    p.add_argument("--no-save", dest="save", action="store_false")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname).1s %(name)s: %(message)s")
    cfg = TrainSettings(**vars(args))
    try:
        import torch  # noqa: F401
        import transformers  # noqa: F401
    except ImportError:
        print("trainer.sft needs torch and transformers: pip install -e '.[train]'", file=sys.stderr)
        return 2
    run(cfg)
    return 0


if __name__ == "__main__":
    sys.exit(main())
