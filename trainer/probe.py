"""How much fine-tuning moved the weights, from a fixed sample of them.

A run whose loss falls can still leave the weights where they were (updates rounded away in a low
precision, a learning rate too small for the dtype); a tuned model that is the base model in all but name
makes every comparison after it meaningless. So the trainer keeps `per_tensor` elements of every trainable
tensor, evenly strided, on the CPU before the first step, and reports at the end:

- `fraction_changed`: the share of sampled elements whose training value moved at all;
- `fraction_changed_saved`: the share that still differs once cast to the dtype the model is saved in (a
  move below half a bf16 step rounds back to the base weight);
- `median_relative_l2`: per tensor ||W - W0|| / ||W0|| over its sample, the median over tensors (a whole-model
  norm would be dominated by the norm layers' weights of about 1, which barely move).

A sample keeps this cheap for any model size (4 096 elements a tensor: about 3 MB for 200 tensors).
"""

from __future__ import annotations

import statistics
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
            flat = p.detach().reshape(-1)
            return flat[:: max(1, flat.numel() // n)][:n].to("cpu", torch.float32, copy=True)

    def compare(self, params: list[Any], saved_dtype: Any) -> dict[str, float]:
        torch = self.torch
        after = [self._sample(torch, p, self.per_tensor) for p in params]
        w0, w1 = torch.cat(self.before), torch.cat(after)
        per_tensor = [float(torch.linalg.vector_norm(a - b) / torch.linalg.vector_norm(b).clamp_min(1e-30))
                      for b, a in zip(self.before, after, strict=True)]
        return {"fraction_changed": round(float((w0 != w1).float().mean()), 6),
                "fraction_changed_saved": round(float((w0.to(saved_dtype) != w1.to(saved_dtype)).float().mean()), 6),
                "median_relative_l2": statistics.median(per_tensor) if per_tensor else 0.0,
                "sampled": int(w0.numel())}
