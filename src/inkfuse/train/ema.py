"""Exponential moving average of the weights: what we sample from, since it is much smoother
than the last iterate of a noisy diffusion loss."""

from __future__ import annotations

import torch
from torch import Tensor, nn


class EMA:
    def __init__(self, net: nn.Module, decay: float):
        self.decay = decay
        self.shadow = {k: v.detach().clone() for k, v in net.state_dict().items()}

    @torch.no_grad()
    def update(self, net: nn.Module, step: int) -> None:
        """shadow ← shadow + (1 − d)(θ − shadow); d warms up as (1 + k) / (10 + k) so early
        averages are not dominated by the random initialisation."""
        decay = min(self.decay, (1 + step) / (10 + step))
        current = net.state_dict()
        floats = [k for k, v in self.shadow.items() if v.is_floating_point()]
        torch._foreach_lerp_([self.shadow[k] for k in floats], [current[k] for k in floats],
                             1 - decay)
        for k, v in self.shadow.items():  # BatchNorm counters and other integer buffers
            if not v.is_floating_point():
                v.copy_(current[k])

    def state_dict(self) -> dict[str, Tensor]:
        return self.shadow

    def load_state_dict(self, tensors: dict[str, Tensor]) -> None:
        missing = set(self.shadow) ^ set(tensors)
        if missing:
            raise KeyError(f"EMA keys differ: {sorted(missing)[:3]}")
        for k, v in tensors.items():
            self.shadow[k].copy_(v)
