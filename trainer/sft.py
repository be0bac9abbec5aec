"""Supervised fine-tuning on the M500 selection of archived discussions (the paper's M500 -> M1 step).

  python -m trainer.sft --archive .state/archive --base-model /models/Qwen2.5-32B-Instruct --output out/m1
  python -m trainer.sft --data m500.jsonl --base-model /models/qwen0.5b --lora-rank 16 --epochs 1
  torchrun --nproc-per-node 8 -m trainer.sft --data m500.jsonl --base-model /models/Qwen2.5-32B-Instruct \
      --output out/m1 --save-every 50 --resume

One process on one GPU (or the CPU for a tiny model), or several under torchrun: then the weights,
gradients and optimizer state are sharded with FSDP2 (ZeRO-3, as the paper's DeepSpeed run) and each
rank trains whole problems, in order, token-balanced (trainer/shard.py). Loss on assistant tokens only,
averaged over the trained tokens of each global batch, on any number of ranks. Every step prints a
progress line and appends a JSON line to OUTPUT/metrics.jsonl (rank 0). --save-every writes sharded
checkpoints (torch.distributed.checkpoint) that --resume continues from, on the same or another number
of ranks. Needs the `train` extra (torch, transformers; peft for --lora-rank).
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

from trainer.checkpoint import (
    Checkpoints,
    ResumeError,
    TrainerState,
    check_fresh_start,
    check_resumable,
    fingerprint,
    position,
    trim_metrics,
)
from trainer.encode import IGNORE, Encoded, EncodeError, encode
from trainer.order import epoch_order
from trainer.probe import WeightProbe
from trainer.samples import Sample
from trainer.settings import TrainSettings
from trainer.shard import epoch_plan, steps_per_epoch

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


class NonFiniteGradients(RuntimeError):
    """Too many optimizer steps in a row had NaN or infinite gradients."""


class NonFiniteGuard:
    """Whether an optimizer step may apply its gradients. One with a NaN or infinite norm is skipped, so the
    weights keep their last finite values (applied, one such step made every weight NaN for the rest of a
    run, and the NaN model was saved and served). `limit` in a row end the run: the data or the recipe is
    broken, and going on would hide it."""

    def __init__(self, limit: int) -> None:
        self.limit, self.in_row, self.skipped = limit, 0, 0

    def apply(self, grad_norm: float) -> bool:
        if math.isfinite(grad_norm):
            self.in_row = 0
            return True
        self.in_row += 1
        self.skipped += 1
        if self.in_row >= self.limit:
            raise NonFiniteGradients(f"{self.in_row} optimizer steps in a row had non-finite gradients "
                                     f"({self.skipped} in all); stopped without saving")
        return False


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


@dataclass
class Progress:
    """Where training stands: a fresh run starts at zero, a resumed one where its checkpoint left off."""

    step: int = 0
    trained_tokens: int = 0
    elapsed_s: float = 0.0
    resumed_from: str | None = None


def find_resume(cfg: TrainSettings, dist: Any, data_fingerprint: str) -> tuple[TrainerState, Path] | None:
    """The checkpoint to continue from, checked before any weights are loaded; None: a fresh start."""
    ckpts = Checkpoints(cfg.output / "checkpoints")
    if not cfg.resume:
        check_fresh_start(ckpts, will_save=bool(cfg.save_every or cfg.stop_after))
        return None
    found = ckpts.latest()
    if found is None:
        if dist.main:
            print(f"no complete checkpoint in {ckpts.root}: starting afresh", flush=True)
        return None
    for warning in check_resumable(found[0], data_fingerprint, dist.world):
        log.warning("%s", warning)
    return found


def restore(cfg: TrainSettings, dist: Any, model: Any, optimizer: Any,
            found: tuple[TrainerState, Path] | None) -> Progress:
    """Loads the checkpoint's shards into this run's model and optimizer; rank 0 trims or starts metrics."""
    from trainer import distributed

    metrics_path = cfg.output / "metrics.jsonl"
    if found is None:
        if dist.main:
            metrics_path.write_text("", encoding="utf-8")
        return Progress()
    state, path = found
    distributed.load(path, model, optimizer)
    if dist.main:
        kept = trim_metrics(metrics_path, state.step)
        print(f"resumed from {path} at step {state.step} ({kept} metrics rows kept)", flush=True)
    return Progress(state.step, state.trained_tokens, state.elapsed_s, str(path))


def checkpoint(cfg: TrainSettings, dist: Any, model: Any, optimizer: Any, state: TrainerState) -> None:
    """Every rank writes its shards; then rank 0 marks the checkpoint complete and deletes old ones."""
    from trainer import distributed

    ckpts = Checkpoints(cfg.output / "checkpoints")
    path = ckpts.path(state.step)
    distributed.save(path, model, optimizer)
    distributed.barrier(dist)
    if dist.main:
        ckpts.mark_complete(state)
        gone = ckpts.prune(cfg.keep_checkpoints)
        print(f"checkpoint {path}" + (f" ({len(gone)} older removed)" if gone else ""), flush=True)
    distributed.barrier(dist)


def load_model(cfg: TrainSettings, dist: Any, dtype: Any) -> Any:
    """The base model (with LoRA adapters for --lora-rank) on this process's device, sharded over the
    ranks when there are several."""
    from transformers import AutoModelForCausalLM

    from trainer import distributed

    model = AutoModelForCausalLM.from_pretrained(cfg.base_model, dtype=dtype, local_files_only=True)
    if not dist.sharded:
        model = model.to(dist.device)
    if cfg.gradient_checkpointing:
        # FSDP's hooks need the non-reentrant checkpoint; one process keeps transformers' default.
        model.gradient_checkpointing_enable(
            gradient_checkpointing_kwargs={"use_reentrant": False} if dist.sharded else None)
        model.config.use_cache = False
    if cfg.lora_rank:
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(model, LoraConfig(r=cfg.lora_rank, lora_alpha=cfg.lora_alpha, task_type="CAUSAL_LM",
                                                 target_modules="all-linear"))
        if cfg.gradient_checkpointing:
            model.enable_input_require_grads()
    if dist.sharded:
        model = distributed.shard(model, dist)  # moves this rank's shards to its device
    return model


def run(cfg: TrainSettings) -> dict:
    import torch

    from trainer import distributed

    dist = distributed.start(torch)
    try:
        return train(cfg, torch, dist)
    finally:
        distributed.stop(dist)


def train(cfg: TrainSettings, torch: Any, dist: Any) -> dict:
    from transformers import AutoTokenizer

    from trainer import distributed

    torch.manual_seed(cfg.seed)
    device = dist.device
    dtype = torch.bfloat16 if cfg.bf16 else torch.float32
    tokenizer = AutoTokenizer.from_pretrained(cfg.base_model, local_files_only=True)
    prepared = prepare(load_samples(cfg), tokenizer, cfg.seq_len)
    if not prepared.encoded:
        raise SystemExit(f"no trainable samples (skipped: {prepared.skipped or 'none'})")
    per_epoch = steps_per_epoch(len(prepared.encoded), cfg.global_batch)
    total = cfg.max_steps or cfg.epochs * per_epoch
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    problem_of = [s.problem_id for s in prepared.samples]
    lengths = [len(e.input_ids) for e in prepared.encoded]
    data_fp = fingerprint(((s.problem_id, s.seq, n) for s, n in zip(prepared.samples, lengths, strict=True)),
                          {"seed": cfg.seed, "global_batch": cfg.global_batch, "seq_len": cfg.seq_len,
                           "lora_rank": cfg.lora_rank, "total_steps": total})
    cfg.output.mkdir(parents=True, exist_ok=True)
    metrics_path = cfg.output / "metrics.jsonl"
    found = find_resume(cfg, dist, data_fp)
    # Full fine-tuning keeps float32 master weights under bf16 autocast: in bf16 an Adam step of lr 1e-5
    # is below half the spacing of a weight of typical size (2^-8 relative, ~8e-5 at 0.02), so most updates
    # would round to nothing. LoRA's frozen base stays bf16 (peft keeps its adapters in float32).
    master = dtype if cfg.lora_rank else torch.float32
    model = distributed.one_at_a_time(dist, lambda: load_model(cfg, dist, master))
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    probe = None if dist.sharded else WeightProbe.take(torch, params)
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=0.0)
    progress = restore(cfg, dist, model, optimizer, found)
    say = print if dist.main else (lambda *a, **k: None)
    say(f"training on {len(prepared.encoded)} samples from {len(set(problem_of))} "
        f"problems ({sum(e.trained_tokens for e in prepared.encoded)} trained tokens); skipped: "
        f"{prepared.skipped or 'none'}; {total} steps of {cfg.global_batch} samples on "
        f"{device if not dist.sharded else f'{dist.world} ranks ({dist.device_type}, FSDP)'}", flush=True)

    def tensors(seqs: list[Encoded]) -> tuple[Any, Any, Any]:
        width = max(len(e.input_ids) for e in seqs)
        ids = torch.full((len(seqs), width), pad, dtype=torch.long)
        labels = torch.full((len(seqs), width), IGNORE, dtype=torch.long)
        mask = torch.zeros((len(seqs), width), dtype=torch.long)
        for row, e in enumerate(seqs):
            ids[row, : len(e.input_ids)] = torch.tensor(e.input_ids)
            labels[row, : len(e.labels)] = torch.tensor(e.labels)
            mask[row, : len(e.input_ids)] = 1
        return ids.to(device), labels.to(device), mask.to(device)

    # A rank with fewer micro batches than another in a step still runs every forward pass (sharded
    # weights are gathered collectively): on this short sequence, its loss weighted zero.
    filler = Encoded(prepared.encoded[0].input_ids[:8], [IGNORE] * min(8, len(prepared.encoded[0].input_ids)))
    step, started, history = progress.step, time.perf_counter() - progress.elapsed_s, []
    trained_total, this_run = progress.trained_tokens, 0
    stopped_early = False
    guard = NonFiniteGuard(cfg.max_nonfinite_steps)
    epoch, skip = position(step, per_epoch)
    while step < total and (cfg.max_steps or epoch < cfg.epochs):
        plan = epoch_plan(epoch_order(prepared.samples, epoch, cfg.seed), problem_of, lengths, dist.world,
                          cfg.global_batch)
        for planned in plan[skip:]:
            if step >= total:
                break
            for group in optimizer.param_groups:
                group["lr"] = lr_at(step, total, cfg.lr, cfg.warmup_ratio)
            t0 = time.perf_counter()
            # Every rank knows the whole step's trained tokens from the plan: the loss is their mean.
            n_trained = sum(prepared.encoded[i].trained_tokens for shard in planned.shards for i in shard)
            micros = planned.micro_batches(dist.rank, cfg.micro_batch)
            n_tokens, loss_sum = 0, 0.0
            for micro in micros:
                ids, labels, mask = tensors([prepared.encoded[i] for i in micro] or [filler])
                with torch.autocast(device_type=dist.device_type, dtype=dtype, enabled=cfg.bf16):
                    logits = model(input_ids=ids, attention_mask=mask).logits
                if not micro:
                    (logits.sum() * 0.0).backward()
                    continue
                # Sum over this micro batch's trained tokens, divided by the whole global batch's count:
                # every trained token weighs the same, however the samples are split into micro batches
                # and ranks. FSDP averages gradients over the ranks, hence the factor world.
                loss = torch.nn.functional.cross_entropy(
                    logits[:, :-1].flatten(0, 1).float(), labels[:, 1:].flatten(), ignore_index=IGNORE,
                    reduction="sum") / n_trained
                (loss * dist.world).backward()
                loss_sum += loss.item()
                n_tokens += int(mask.sum())
            norm = distributed.grad_norm(torch.nn.utils.clip_grad_norm_(params, 1.0))
            applied = guard.apply(norm)  # the norm is reduced over the ranks: every rank decides alike
            if applied:
                optimizer.step()
            else:
                log.warning("step %d: gradient norm %s, step skipped (%d in a row)", step + 1, norm, guard.in_row)
            optimizer.zero_grad(set_to_none=True)
            loss_sum, n_tokens = distributed.all_sum(torch, dist, [loss_sum, float(n_tokens)])
            if dist.device_type == "cuda":
                torch.cuda.synchronize()
            step += 1
            this_run += 1
            trained_total += n_trained
            dt = time.perf_counter() - t0
            row = {"step": step, "epoch": epoch + 1, "loss": round(loss_sum, 5), "lr": optimizer.param_groups[0]["lr"],
                   "grad_norm": round(norm, 4), "samples": planned.samples, "tokens": int(n_tokens),
                   "trained_tokens": n_trained, "tokens_per_s": round(n_tokens / dt, 1),
                   "elapsed_s": round(time.perf_counter() - started, 2)}
            if dist.sharded:
                row["ranks"] = dist.world
            if not applied:
                row["skipped"] = True
            history.append(row)
            if dist.main:
                with metrics_path.open("a", encoding="utf-8") as f:
                    f.write(json.dumps(row) + "\n")
            say(f"step {step}/{total} epoch {epoch + 1} loss {loss_sum:.4f} lr {row['lr']:.2e} "
                f"grad {norm:.2f} {row['tokens_per_s']:.0f} tok/s", flush=True)
            stopped_early = bool(cfg.stop_after) and this_run >= cfg.stop_after and step < total
            if (cfg.save_every and step % cfg.save_every == 0) or stopped_early:
                at = position(step, per_epoch)
                checkpoint(cfg, dist, model, optimizer, TrainerState(
                    step=step, epoch=at[0], step_in_epoch=at[1], total_steps=total, world_size=dist.world,
                    data_fingerprint=data_fp, trained_tokens=trained_total,
                    elapsed_s=round(time.perf_counter() - started, 2)))
            if stopped_early:
                break
        if stopped_early:
            break
        epoch, skip = epoch + 1, 0
    summary = {"steps": step, "first_loss": history[0]["loss"] if history else None,
               "last_loss": history[-1]["loss"] if history else None,
               "trained_tokens": trained_total, "seconds": round(time.perf_counter() - started, 2),
               "samples": len(prepared.encoded), "skipped": prepared.skipped,
               "nonfinite_steps_skipped": guard.skipped, "device": device,
               "master_dtype": str(master).removeprefix("torch."),
               "weights_changed": probe.compare(params, dtype) if probe else None,
               "peak_memory_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2)
               if dist.device_type == "cuda" else None}
    if dist.sharded:
        summary["ranks"] = dist.world
    if progress.resumed_from:
        summary["resumed_from"] = progress.resumed_from
    if stopped_early:
        summary["stopped_after"] = this_run  # not finished: no final model; --resume continues
    elif cfg.save:
        final = cfg.output / "final"
        # Saved in the training dtype (bf16 unless --fp32): the base model's, the size a pod expects.
        if dist.sharded:
            weights = distributed.full_state_dict(model)  # a collective: every rank gathers
            if dist.main:
                model.save_pretrained(final, state_dict={k: v.to(dtype) for k, v in weights.items()})
        else:
            model.to(dtype).save_pretrained(final)
        if dist.main:
            tokenizer.save_pretrained(final)
        summary["saved"] = str(final)
    if dist.main:
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
    for name in ("epochs", "global_batch", "micro_batch", "max_steps", "lora_rank", "lora_alpha", "seq_len", "seed",
                 "save_every", "keep_checkpoints", "stop_after", "max_nonfinite_steps"):
        p.add_argument(f"--{name.replace('_', '-')}", type=int, default=defaults[name],
                       help=TrainSettings.model_fields[name].description or f"default {defaults[name]}")
    p.add_argument("--lr", type=float, default=defaults["lr"])
    p.add_argument("--warmup-ratio", type=float, default=defaults["warmup_ratio"])
    p.add_argument("--no-gradient-checkpointing", dest="gradient_checkpointing", action="store_false")
    p.add_argument("--fp32", dest="bf16", action="store_false",
                   help="no bf16 autocast: compute and save in float32 (default: bf16 autocast over float32 "
                   "master weights, saved in bf16)")
    p.add_argument("--no-save", dest="save", action="store_false")
    p.add_argument("--resume", action="store_true", help=TrainSettings.model_fields["resume"].description)
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
    try:
        run(cfg)
    except (ResumeError, NonFiniteGradients) as exc:
        print(f"trainer.sft: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
