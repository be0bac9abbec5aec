"""The process group, FSDP2 sharding and torch.distributed.checkpoint for trainer.sft.

Started by torchrun (WORLD_SIZE, RANK, LOCAL_RANK, MASTER_ADDR in the environment) the trainer joins a
process group (NCCL on GPUs, gloo on the CPU) and shards the model with FSDP2's `fully_shard`: each
decoder layer is one unit (the model's `_no_split_modules`), so a layer's weights are gathered just
before it runs and freed after, and gradients and Adam state stay sharded (ZeRO-3, as the paper's
DeepSpeed run). Started without torchrun, it is one process and nothing here changes the model.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

log = logging.getLogger("trainer.distributed")


@dataclass(frozen=True)
class Dist:
    rank: int
    world: int
    local_rank: int
    device: str  # "cuda:N" or "cpu"
    local_world: int = 1  # processes on this node
    mesh: Any = None  # the 1-D device mesh FSDP shards over (None on one process)

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def sharded(self) -> bool:
        return self.world > 1

    @property
    def device_type(self) -> str:
        return self.device.split(":")[0]


def start(torch: Any) -> Dist:
    """Joins torchrun's process group when there is one; else one process on cuda or the CPU."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    cuda = torch.cuda.is_available()
    if world <= 1:
        return Dist(0, 1, 0, "cuda" if cuda else "cpu")
    import torch.distributed as td

    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if cuda:
        torch.cuda.set_device(local_rank)
    backend = os.environ.get("CONCLAVE_TRAIN_BACKEND") or ("nccl" if cuda else "gloo")
    td.init_process_group(backend=backend)
    from torch.distributed.device_mesh import init_device_mesh

    device_type = "cuda" if cuda else "cpu"
    dist = Dist(td.get_rank(), td.get_world_size(), local_rank, f"cuda:{local_rank}" if cuda else "cpu",
                int(os.environ.get("LOCAL_WORLD_SIZE", "1")), init_device_mesh(device_type, (td.get_world_size(),)))
    log.info("rank %d of %d on %s (%s)", dist.rank, dist.world, dist.device, backend)
    return dist


def stop(dist: Dist) -> None:
    if dist.sharded:
        import torch.distributed as td

        td.destroy_process_group()


def barrier(dist: Dist) -> None:
    if dist.sharded:
        import torch.distributed as td

        td.barrier()


def all_sum(torch: Any, dist: Dist, values: list[float]) -> list[float]:
    """Sums a few numbers over the ranks (one small all-reduce); the values themselves on one process."""
    if not dist.sharded:
        return values
    import torch.distributed as td

    t = torch.tensor(values, dtype=torch.float64, device=dist.device)
    td.all_reduce(t)
    return t.tolist()


def one_at_a_time(dist: Dist, build: Callable[[], T]) -> T:
    """Runs `build` (load the full model on the CPU, shard it) on one process of each node at a time:
    the host then holds one full copy of the weights at once, not one per GPU (32B in bf16: 65 GB)."""
    if not dist.sharded:
        return build()
    result: T | None = None
    for turn in range(dist.local_world):
        if dist.local_rank == turn:
            log.info("rank %d loads the model (%d of %d on this node)", dist.rank, turn + 1, dist.local_world)
            result = build()
        barrier(dist)
    assert result is not None
    return result


def shard(model: Any, dist: Dist) -> Any:
    """FSDP2 over the ranks: every decoder layer, then the root (embeddings, norm, head)."""
    from torch.distributed.fsdp import fully_shard

    layer_names = set(getattr(model, "_no_split_modules", None) or [])
    if not layer_names:  # a peft wrapper: the names are on the model it wraps
        inner = model.get_base_model() if hasattr(model, "get_base_model") else model
        layer_names = set(getattr(inner, "_no_split_modules", None) or [])
    layers = [m for m in model.modules() if type(m).__name__ in layer_names]
    if not layers:
        raise SystemExit(f"cannot shard {type(model).__name__}: it names no decoder layer class "
                         "(_no_split_modules); FSDP needs one unit per layer")
    # Sharding does no collective: each rank cuts its own copy (all load the same weights and seed).
    for layer in layers:
        fully_shard(layer, mesh=dist.mesh)
    fully_shard(model, mesh=dist.mesh)
    log.info("sharded %d %s layers over %d ranks", len(layers), "/".join(sorted(layer_names)), dist.world)
    return model


def grad_norm(norm: Any) -> float:
    """clip_grad_norm_ returns a DTensor over sharded gradients: its full value."""
    return float(norm.full_tensor() if hasattr(norm, "full_tensor") else norm)


def save(path: Path, model: Any, optimizer: Any) -> None:
    """Every rank writes its own shards of the model and the optimizer (torch.distributed.checkpoint)."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict

    model_sd, optim_sd = get_state_dict(model, optimizer)
    dcp.save({"model": model_sd, "optimizer": optim_sd}, checkpoint_id=str(path))


def load(path: Path, model: Any, optimizer: Any) -> None:
    """Reads a checkpoint into this run's sharding (it may differ from the one that saved it)."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

    model_sd, optim_sd = get_state_dict(model, optimizer)
    state = {"model": model_sd, "optimizer": optim_sd}
    dcp.load(state, checkpoint_id=str(path))
    set_state_dict(model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optimizer"])


def full_state_dict(model: Any) -> dict[str, Any]:
    """The whole model's weights on the CPU of rank 0 (every rank must call it: it gathers)."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
