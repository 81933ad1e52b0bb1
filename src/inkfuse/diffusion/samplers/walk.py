"""The loop shared by samplers that make one model call per step."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from inkfuse.diffusion.conditioning import Condition
from inkfuse.diffusion.denoiser import Prediction

# update(x_t, prediction, ᾱ_t, ᾱ_prev, fresh noise or None) -> x_prev
Update = Callable[[Tensor, Prediction, Tensor, Tensor, "Tensor | None"], Tensor]
OnStep = Callable[[int, Tensor, Prediction], None]


@torch.no_grad()
def walk(
    denoiser: Callable, x: Tensor, timesteps: Tensor, cond: Condition | None, update: Update, *,
    stochastic: bool, generator: torch.Generator | None, on_step: OnStep | None,
) -> Tensor:
    """Visit `timesteps` (descending); after the last one ᾱ_prev = 1, i.e. clean data."""
    schedule = denoiser.schedule
    for i, t in enumerate(timesteps):
        pred = denoiser(x, t.expand(x.shape[0]), cond)
        last = i == len(timesteps) - 1
        ab_t = schedule.alpha_bar(t).to(x)
        ab_prev = torch.ones_like(ab_t) if last else schedule.alpha_bar(timesteps[i + 1]).to(x)
        z = None
        if stochastic and not last:
            z = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        x = update(x, pred, ab_t, ab_prev, z)
        if on_step is not None:
            on_step(i, x, pred)
    return x
