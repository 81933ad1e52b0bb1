"""Euler ancestral (k-diffusion's `sample_euler_ancestral`; the ancestral split of Ho et al.
2020 / Song et al. 2021 written in σ-space).

Each step from σ to σ_next splits σ_next² = σ_down² + σ_up²: a deterministic Euler step on the
probability-flow ODE down to σ_down, then fresh noise of standard deviation σ_up brings the
state back up to σ_next. With η = 1, σ_up² = σ_next² (σ² − σ_next²) / σ² is DDPM's posterior
variance (in σ-space); η = 0 is plain Euler. The last step, to σ = 0, adds no noise.

Default grid: `karras_timesteps` with σ_max capped at EDM's 80, as for `euler`.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from inkfuse.diffusion.conditioning import Condition
from inkfuse.diffusion.samplers.euler import euler_step
from inkfuse.diffusion.samplers.sigma import denoise, from_vp, sigma_grid, to_vp
from inkfuse.diffusion.samplers.walk import DenoiserFn, OnStep, randn


def ancestral_split(sigma: float, sigma_next: float, eta: float) -> tuple[float, float]:
    """(σ_down, σ_up) with
        σ_up = min(σ_next, η sqrt(σ_next² (σ² − σ_next²) / σ²)),  σ_down = sqrt(σ_next² − σ_up²).
    """
    if sigma_next == 0:
        return 0.0, 0.0
    sigma_up = min(sigma_next, eta * math.sqrt(sigma_next**2 * (sigma**2 - sigma_next**2)
                                               / sigma**2))
    return math.sqrt(sigma_next**2 - sigma_up**2), sigma_up


def euler_ancestral_step(x: Tensor, denoised: Tensor, sigma: float, sigma_next: float,
                         eta: float, z: Tensor) -> Tensor:
    """x_next = x + (σ_down − σ) (x − D(x; σ)) / σ + σ_up z,  z ~ N(0, I)."""
    sigma_down, sigma_up = ancestral_split(sigma, sigma_next, eta)
    return euler_step(x, denoised, sigma, sigma_down) + sigma_up * z


@torch.no_grad()
def euler_ancestral(
    denoiser: DenoiserFn, x: Tensor, grid: Tensor, cond: Condition | None = None, *,
    generator: torch.Generator | None = None, on_step: OnStep | None = None, eta: float = 1.0,
) -> Tensor:
    """Euler ancestral from VP noise `x` at grid[0] down to σ = 0; fresh noise from `generator`
    at every step but the last. η = 0 is `euler`."""
    sigmas = sigma_grid(denoiser.schedule, grid)
    x = from_vp(x, sigmas[0])
    for i, t in enumerate(grid):
        pred = denoise(denoiser, x, sigmas[i], t, cond)
        z = randn(x, generator) if sigmas[i + 1] > 0 else torch.zeros_like(x)
        x = euler_ancestral_step(x, pred.x0, sigmas[i], sigmas[i + 1], eta, z)
        if on_step is not None:
            on_step(i, to_vp(x, sigmas[i + 1]), pred)
    return x
