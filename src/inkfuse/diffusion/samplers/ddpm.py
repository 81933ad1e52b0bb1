"""Ancestral DDPM sampling (Ho et al. 2020, Algorithm 2), on any subsequence of steps."""

from __future__ import annotations

import torch
from torch import Tensor

from inkfuse.diffusion.conditioning import Condition
from inkfuse.diffusion.denoiser import Prediction, step_variance
from inkfuse.diffusion.samplers.walk import DenoiserFn, OnStep, walk


def ddpm_step(
    x: Tensor, pred: Prediction, ab_t: Tensor, ab_prev: Tensor, z: Tensor | None
) -> Tensor:
    """One reverse step from the posterior q(x_prev | x_t, x̂_0) (DDPM eq. 6-7).

    With α = ᾱ_t / ᾱ_prev and β = 1 − α (one "big" step when steps are skipped):
        μ  = sqrt(ᾱ_prev) β / (1 − ᾱ_t) · x̂_0 + sqrt(α) (1 − ᾱ_prev) / (1 − ᾱ_t) · x_t
        σ² = β (1 − ᾱ_prev) / (1 − ᾱ_t)
    `z` is the fresh noise; None gives the posterior mean only (what the course shows fails).
    A model that learned its variance (`pred.var_frac`) sets σ² between β̃ and β for this very
    step, whatever the grid (Nichol & Dhariwal 2021, eq. 15 and §4 on fewer steps).
    """
    alpha = ab_t / ab_prev
    beta = 1 - alpha
    mean = (ab_prev.sqrt() * beta * pred.x0 + alpha.sqrt() * (1 - ab_prev) * x) / (1 - ab_t)
    if z is None:
        return mean
    return mean + step_variance(ab_t, ab_prev, pred.var_frac).sqrt() * z


def ddpm(
    denoiser: DenoiserFn, x: Tensor, grid: Tensor, cond: Condition | None = None, *,
    generator: torch.Generator | None = None, on_step: OnStep | None = None, noise: bool = True,
) -> Tensor:
    """x_prev = μ(x_t, x̂_0) + σ z at every step of `grid` (Algorithm 2 lines 3-4).

    `noise=False` drops the fresh z and keeps the posterior mean: the samples collapse to blurry
    averages, which is why Algorithm 2 draws new noise at every step (a course demo).
    """
    return walk(denoiser, x, grid, cond, ddpm_step, stochastic=noise, generator=generator,
                on_step=on_step)
