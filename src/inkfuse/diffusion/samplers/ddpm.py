"""Ancestral DDPM sampling (Ho et al. 2020, Algorithm 2), on any subsequence of steps."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from inkfuse.diffusion.conditioning import Condition
from inkfuse.diffusion.denoiser import Prediction
from inkfuse.diffusion.samplers.walk import OnStep, walk


def ddpm_step(
    x: Tensor, pred: Prediction, ab_t: Tensor, ab_prev: Tensor, z: Tensor | None
) -> Tensor:
    """One reverse step from the posterior q(x_prev | x_t, x̂_0) (DDPM eq. 6-7).

    With α = ᾱ_t / ᾱ_prev and β = 1 − α (one "big" step when steps are skipped):
        μ  = sqrt(ᾱ_prev) β / (1 − ᾱ_t) · x̂_0 + sqrt(α) (1 − ᾱ_prev) / (1 − ᾱ_t) · x_t
        σ² = β (1 − ᾱ_prev) / (1 − ᾱ_t)
    `z` is the fresh noise; None gives the posterior mean only (what the course shows fails).
    """
    alpha = ab_t / ab_prev
    beta = 1 - alpha
    mean = (ab_prev.sqrt() * beta * pred.x0 + alpha.sqrt() * (1 - ab_prev) * x) / (1 - ab_t)
    if z is None:
        return mean
    return mean + (beta * (1 - ab_prev) / (1 - ab_t)).sqrt() * z


def ddpm(
    denoiser: Callable, x: Tensor, timesteps: Tensor, cond: Condition | None = None, *,
    noise: bool = True, generator: torch.Generator | None = None, on_step: OnStep | None = None,
) -> Tensor:
    """Sample with fresh Gaussian noise at every step (`noise=False` shows why it matters)."""
    return walk(denoiser, x, timesteps, cond, ddpm_step, stochastic=noise,
                generator=generator, on_step=on_step)
