"""Training settings. The defaults are the paper's M1-32B recipe (PROTOCOL.md: full fine-tuning, lr 1e-5,
cosine, warmup 0.05, 5 epochs, sequence length 32768, bf16, global batch 16)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class TrainSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CONCLAVE_TRAIN_", extra="forbid")

    data: Path | None = Field(None, description="JSONL from `python -m trainer.dataset`")
    archive: Path | None = Field(None, description="or: build the M500 data from this archive directory")
    grades: list[Path] = Field(default_factory=list, description="`conclave eval` results for --archive")
    base_model: str = Field(..., description="a local model directory, or a hub id already in the HF cache "
                            "(weights are never downloaded)")
    output: Path = Field(Path("out/sft"), description="checkpoints and metrics.jsonl go here")
    epochs: int = 5
    lr: float = 1e-5
    warmup_ratio: float = 0.05
    seq_len: int = 32768
    global_batch: int = Field(16, description="samples per optimizer step")
    micro_batch: int = Field(1, description="samples per forward pass; global_batch is accumulated")
    max_steps: int = Field(0, description="stop after this many optimizer steps (0: all epochs)")
    lora_rank: int = Field(0, description="0: full fine-tuning (the paper); >0: LoRA adapters of this rank")
    lora_alpha: int = 32
    gradient_checkpointing: bool = True
    bf16: bool = True
    seed: int = 0
    save: bool = Field(True, description="write the final model (or adapters) to OUTPUT/final")
    save_every: int = Field(0, description="write a checkpoint (model and optimizer, sharded) every N steps to "
                            "OUTPUT/checkpoints (0: none)")
    keep_checkpoints: int = Field(2, description="complete checkpoints kept; older ones are deleted")
    resume: bool = Field(False, description="continue from the latest complete checkpoint in OUTPUT/checkpoints "
                         "(starts afresh when there is none)")
    max_nonfinite_steps: int = Field(8, ge=1, description="optimizer steps in a row whose gradients are NaN or "
                                     "infinite (each skipped, the weights untouched) before training stops with an "
                                     "error and saves nothing")
    stop_after: int = Field(0, description="end this run after N optimizer steps with a checkpoint, the schedule "
                            "still spanning every step (time-sliced or preemptible GPUs; continue with --resume)")
