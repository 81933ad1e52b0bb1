"""What every sampler shares: the types of its arguments, and the loop of the VP samplers.

DDPM and DDIM are the same loop over pairs (ᾱ_t, ᾱ_prev) of the grid with a different update,
so they share `walk`; inpainting (`repaint`) walks the same loop with DDPM's update wrapped.
The σ-space samplers (Euler, Heun, DPM-Solver++, UniPC) keep their loops in their own function.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import torch
from torch import Tensor

from inkfuse.diffusion.conditioning import Condition
from inkfuse.diffusion.denoiser import Prediction
from inkfuse.diffusion.schedule import Schedule


class DenoiserFn(Protocol):
    """`Denoiser`, a guided one, or any exact test denoiser: x_t, t, condition -> (x̂_0, ε̂)."""

    schedule: Schedule

    def __call__(self, x: Tensor, t: Tensor, cond: Condition | None = None) -> Prediction: ...


# on_step(i, x, pred): after grid step i, the state x (VP scale x_t) and the step's prediction.
OnStep = Callable[[int, Tensor, Prediction], None]
# update(x_t, prediction, ᾱ_t, ᾱ_prev, fresh noise or None) -> x_prev
Update = Callable[[Tensor, Prediction, Tensor, Tensor, "Tensor | None"], Tensor]


def randn(x: Tensor, generator: torch.Generator | None) -> Tensor:
    """Fresh noise like `x`: every sampler draws from the caller's generator, in call order."""
    return torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)


def forward_jump(x: Tensor, ab_t: Tensor, ab_next: Tensor, z: Tensor) -> Tensor:
    """x_next ~ q(x_next | x_t) = N(sqrt(α) x_t, (1 − α) I),  α = ᾱ_next / ᾱ_t ≤ 1: the forward
    process from a less noisy level to a noisier one (DDPM eq. 2 over several steps)."""
    alpha = ab_next / ab_t
    return alpha.sqrt() * x + (1 - alpha).sqrt() * z


@torch.no_grad()
def walk(
    denoiser: DenoiserFn, x: Tensor, path: Tensor, cond: Condition | None, update: Update, *,
    stochastic: bool, generator: torch.Generator | None, on_step: OnStep | None,
) -> Tensor:
    """Visit the steps of `path` in order, then clean data (ᾱ = 1 after the last step).

    A step down is one model call and `update` (with fresh noise when `stochastic`, except on the
    last step, whose target is clean data). A sampler's grid only goes down; a path that goes back
    up (RePaint's resampling, `repaint_path`) takes that step with the forward process instead,
    without a model call. `on_step(i, x, pred)` follows every step down, i its index in `path`.
    """
    schedule = denoiser.schedule
    up = (path[1:] > path[:-1]).tolist()  # once, not one device sync per step
    for i, t in enumerate(path):
        last = i == len(path) - 1
        ab_t = schedule.alpha_bar(t).to(x)
        ab_next = torch.ones_like(ab_t) if last else schedule.alpha_bar(path[i + 1]).to(x)
        if not last and up[i]:
            x = forward_jump(x, ab_t, ab_next, randn(x, generator))
            continue
        pred = denoiser(x, t.expand(x.shape[0]), cond)
        z = randn(x, generator) if stochastic and not last else None
        x = update(x, pred, ab_t, ab_next, z)
        if on_step is not None:
            on_step(i, x, pred)
    return x
