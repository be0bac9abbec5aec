"""How much fine-tuning moved the weights, from a fixed sample of them.

A run whose loss falls can still leave the weights where they were (updates rounded away in a low
precision, a learning rate too small for the dtype); a tuned model that is the base model in all but name
makes every comparison after it meaningless. So the trainer keeps the first `per_tensor` elements of every
trainable tensor on the CPU before the first step and reports, at the end, the share of them that changed
and their relative L2 change. A sample keeps this cheap for any model size (about 2 MB for 200 tensors).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class WeightProbe:
    torch: Any
    before: list[Any]
    per_tensor: int

    @classmethod
    def take(cls, torch: Any, params: list[Any], per_tensor: int = 4096) -> WeightProbe:
        return cls(torch, [cls._sample(torch, p, per_tensor) for p in params], per_tensor)

    @staticmethod
    def _sample(torch: Any, p: Any, n: int) -> Any:
        with torch.no_grad():
            return p.detach().reshape(-1)[:n].to("cpu", torch.float32, copy=True)

    def compare(self, params: list[Any]) -> dict[str, float]:
        """`fraction_changed`: sampled elements not bit-equal to their start; `relative_l2`: ||W - W0|| / ||W0||
        over the sample; `sampled`: how many elements."""
        torch = self.torch
        after = [self._sample(torch, p, self.per_tensor) for p in params]
        w0, w1 = torch.cat(self.before), torch.cat(after)
        return {"fraction_changed": round(float((w0 != w1).float().mean()), 6),
                "relative_l2": float(torch.linalg.vector_norm(w1 - w0) / torch.linalg.vector_norm(w0).clamp_min(1e-30)),
                "sampled": int(w0.numel())}
