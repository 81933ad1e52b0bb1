"""DDIM (Song et al. 2021): a non-Markovian reverse process that may skip steps; η = 0 is
deterministic, η = 1 has DDPM's ancestral variance."""

from __future__ import annotations

from functools import partial

import torch
from torch import Tensor

from inkfuse.diffusion.conditioning import Condition
from inkfuse.diffusion.denoiser import Prediction
from inkfuse.diffusion.samplers.walk import DenoiserFn, OnStep, walk


def ddim_step(
    x: Tensor, pred: Prediction, ab_t: Tensor, ab_prev: Tensor, z: Tensor | None, *, eta: float
) -> Tensor:
    """x_prev = sqrt(ᾱ_prev) x̂_0 + sqrt(1 − ᾱ_prev − σ²) ε̂ + σ z   (DDIM eq. 12), with
    σ = η sqrt((1 − ᾱ_prev) / (1 − ᾱ_t)) sqrt(1 − ᾱ_t / ᾱ_prev)   (eq. 16)."""
    sigma = eta * ((1 - ab_prev) / (1 - ab_t) * (1 - ab_t / ab_prev)).sqrt()
    x = ab_prev.sqrt() * pred.x0 + (1 - ab_prev - sigma**2).clamp(min=0).sqrt() * pred.eps
    return x if z is None else x + sigma * z


def ddim(
    denoiser: DenoiserFn, x: Tensor, grid: Tensor, cond: Condition | None = None, *,
    generator: torch.Generator | None = None, on_step: OnStep | None = None, eta: float = 0.0,
) -> Tensor:
    """DDIM eq. 12 at every step of `grid`; fresh noise is drawn only when η > 0."""
    return walk(denoiser, x, grid, cond, partial(ddim_step, eta=eta), stochastic=eta > 0,
                generator=generator, on_step=on_step)
