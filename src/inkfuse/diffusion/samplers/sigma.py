"""The σ-space (EDM) view of a VP denoiser, shared by Euler, Heun, DPM-Solver++ and UniPC.

A VP state x_t is the EDM state x_σ = x_t / sqrt(ᾱ_t) = x_t · sqrt(1 + σ²) = x_0 + σ ε
(Karras et al. 2022, eq. 1 with σ(t) = t, s(t) = 1), whose probability-flow ODE is

    dx/dσ = (x − D(x; σ)) / σ        (EDM eq. 1 with the score of eq. 3)

with D(x; σ) = x̂_0, the denoiser's prediction. These samplers step x_σ, and convert back to
x_t for the network and for `on_step`.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from inkfuse.diffusion.conditioning import Condition
from inkfuse.diffusion.denoiser import Prediction
from inkfuse.diffusion.samplers.walk import DenoiserFn
from inkfuse.diffusion.schedule import Schedule


def sigma_grid(schedule: Schedule, grid: Tensor) -> list[float]:
    """σ_i = sqrt((1 − ᾱ)/ᾱ) at each (possibly fractional) step, then σ_N = 0 (clean data)."""
    return [*schedule.sigma(grid).double().tolist(), 0.0]


def to_vp(x: Tensor, sigma: float) -> Tensor:
    """x_t = sqrt(ᾱ) x_σ = x_σ / sqrt(1 + σ²): the scale the network and `on_step` see."""
    return x / math.sqrt(1 + sigma**2)


def from_vp(x: Tensor, sigma: float) -> Tensor:
    """x_σ = x_t / sqrt(ᾱ) = x_t · sqrt(1 + σ²)."""
    return x * math.sqrt(1 + sigma**2)


def denoise(denoiser: DenoiserFn, x: Tensor, sigma: float, t: Tensor,
            cond: Condition | None) -> Prediction:
    """EDM's D(x; σ) (as pred.x0) of a VP denoiser, which sees x_σ / sqrt(1 + σ²) at step t(σ)."""
    return denoiser(to_vp(x, sigma), t.expand(x.shape[0]), cond)


def step_of(schedule: Schedule, sigma: float, like: Tensor) -> Tensor:
    """The fractional step t(σ) (for noise levels between the grid's, e.g. after churn)."""
    return schedule.sigma_to_t(torch.tensor(sigma, device=like.device))
