"""DPM-Solver++(2M) SDE and (3M) SDE (Lu et al. 2022, "DPM-Solver++" §5; k-diffusion's
`sample_dpmpp_2m_sde` (midpoint) and `sample_dpmpp_3m_sde`), data prediction, in σ-space.

With λ = −log σ, h = λ_next − λ and η the amount of noise, the SDE solution from σ to σ_next is

    x_next = (σ_next/σ) e^{−ηh} x + σ_next ∫ e^{(1+η)(λ'−λ_next)}(1+η) x̂_0(λ') dλ'
             + σ_next sqrt(1 − e^{−2ηh}) z

and the solvers differ in how they interpolate x̂_0(λ): 2M linearly through the previous step's
x̂_0 (midpoint form), 3M quadratically through the two previous ones. Each step costs one model
call. η = 0 is the probability-flow ODE (2M SDE with η = 0 is `dpmpp-2m`). The last step (to
σ = 0) returns x̂_0.

Default grid: `karras_timesteps` with σ_max capped at EDM's 80, as in k-diffusion.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from inkfuse.diffusion.conditioning import Condition
from inkfuse.diffusion.samplers.dpmpp import lam
from inkfuse.diffusion.samplers.sigma import denoise, from_vp, sigma_grid, to_vp
from inkfuse.diffusion.samplers.walk import DenoiserFn, OnStep, randn

History = list[tuple[Tensor, float]]  # (x̂_0, σ) at the previous grid points, newest first
SdeUpdate = Callable[[Tensor, Tensor, float, float, float, Tensor, History], Tensor]


def sde_first_order(x: Tensor, denoised: Tensor, sigma: float, sigma_next: float, eta: float,
                    z: Tensor) -> Tensor:
    """The first-order SDE step (x̂_0 constant across the step):
        x_next = (σ_next/σ) e^{−ηh} x + (1 − e^{−(1+η)h}) x̂_0 + σ_next sqrt(1 − e^{−2ηh}) z."""
    h = lam(sigma_next) - lam(sigma)
    return ((sigma_next / sigma) * math.exp(-eta * h) * x - math.expm1(-(1 + eta) * h) * denoised
            + sigma_next * math.sqrt(-math.expm1(-2 * eta * h)) * z)


def dpmpp_2m_sde_step(x: Tensor, denoised: Tensor, sigma: float, sigma_next: float, eta: float,
                      z: Tensor, old_denoised: Tensor | None = None,
                      sigma_prev: float | None = None) -> Tensor:
    """The first-order step plus the midpoint correction through x̂_0,prev:
        r = (λ − λ_prev) / h,  x_next += ½ (1 − e^{−(1+η)h}) (x̂_0 − x̂_0,prev) / r."""
    if sigma_next == 0:
        return denoised
    x_next = sde_first_order(x, denoised, sigma, sigma_next, eta, z)
    if old_denoised is not None:
        h = lam(sigma_next) - lam(sigma)
        r = (lam(sigma) - lam(sigma_prev)) / h
        x_next = x_next - 0.5 * math.expm1(-(1 + eta) * h) * (denoised - old_denoised) / r
    return x_next


def dpmpp_3m_sde_step(x: Tensor, denoised: Tensor, sigma: float, sigma_next: float, eta: float,
                      z: Tensor, history: History) -> Tensor:
    """The first-order step plus the corrections through the previous x̂_0's
    (`history`, newest first: [(x̂_0,1, σ_1), (x̂_0,2, σ_2)]), with ĥ = (1+η) h,
    r_0 = h_1 / h, r_1 = h_2 / h, φ_2 = (e^{−ĥ} − 1)/ĥ + 1, φ_3 = φ_2/ĥ − ½:
        D1_0 = (x̂_0 − x̂_0,1) / r_0,  D1_1 = (x̂_0,1 − x̂_0,2) / r_1,
        D1 = D1_0 + (D1_0 − D1_1) r_0 / (r_0 + r_1),  D2 = (D1_0 − D1_1) / (r_0 + r_1),
        x_next += φ_2 D1 − φ_3 D2            (one previous x̂_0: x_next += φ_2 D1_0)."""
    if sigma_next == 0:
        return denoised
    x_next = sde_first_order(x, denoised, sigma, sigma_next, eta, z)
    h = lam(sigma_next) - lam(sigma)
    h_eta = (1 + eta) * h
    phi_2 = math.expm1(-h_eta) / h_eta + 1
    if history:
        d1_prev, sigma_1 = history[0]
        r0 = (lam(sigma) - lam(sigma_1)) / h
        d1_0 = (denoised - d1_prev) / r0
        if len(history) == 1:
            return x_next + phi_2 * d1_0
        d2_prev, sigma_2 = history[1]
        r1 = (lam(sigma_1) - lam(sigma_2)) / h
        d1_1 = (d1_prev - d2_prev) / r1
        d1 = d1_0 + (d1_0 - d1_1) * r0 / (r0 + r1)
        d2 = (d1_0 - d1_1) / (r0 + r1)
        phi_3 = phi_2 / h_eta - 0.5
        x_next = x_next + phi_2 * d1 - phi_3 * d2
    return x_next


def fresh_noise(x: Tensor, eta: float, sigma_next: float,
                generator: torch.Generator | None) -> Tensor:
    """z ~ N(0, I) where the step adds noise (η > 0, σ_next > 0), else zeros (no draw)."""
    return randn(x, generator) if eta > 0 and sigma_next > 0 else torch.zeros_like(x)


@torch.no_grad()
def sde_walk(denoiser: DenoiserFn, x: Tensor, grid: Tensor, cond: Condition | None,
             generator: torch.Generator | None, on_step: OnStep | None, eta: float,
             update: SdeUpdate, keep: int) -> Tensor:
    """The loop both multistep SDE solvers share (as DDPM and DDIM share `walk`): from VP noise
    `x` at grid[0] to σ = 0, one model call per step, then
    x = update(x, x̂_0, σ, σ_next, η, z, history) with the last `keep` (x̂_0, σ)."""
    sigmas = sigma_grid(denoiser.schedule, grid)
    x = from_vp(x, sigmas[0])
    history: History = []
    for i, t in enumerate(grid):
        pred = denoise(denoiser, x, sigmas[i], t, cond)
        z = fresh_noise(x, eta, sigmas[i + 1], generator)
        x = update(x, pred.x0, sigmas[i], sigmas[i + 1], eta, z, history)
        history = [(pred.x0, sigmas[i]), *history][:keep]
        if on_step is not None:
            on_step(i, to_vp(x, sigmas[i + 1]), pred)
    return x


def dpmpp_2m_sde(
    denoiser: DenoiserFn, x: Tensor, grid: Tensor, cond: Condition | None = None, *,
    generator: torch.Generator | None = None, on_step: OnStep | None = None, eta: float = 1.0,
) -> Tensor:
    """DPM-Solver++(2M) SDE (midpoint) from VP noise `x` at grid[0] down to σ = 0: each step
    `dpmpp_2m_sde_step` through the previous step's x̂_0."""
    def update(x, denoised, sigma, sigma_next, eta, z, history):
        return dpmpp_2m_sde_step(x, denoised, sigma, sigma_next, eta, z,
                                 *(history[0] if history else (None, None)))

    return sde_walk(denoiser, x, grid, cond, generator, on_step, eta, update, keep=1)


def dpmpp_3m_sde(
    denoiser: DenoiserFn, x: Tensor, grid: Tensor, cond: Condition | None = None, *,
    generator: torch.Generator | None = None, on_step: OnStep | None = None, eta: float = 1.0,
) -> Tensor:
    """DPM-Solver++(3M) SDE from VP noise `x` at grid[0] down to σ = 0: each step
    `dpmpp_3m_sde_step` through the two previous steps' x̂_0."""
    return sde_walk(denoiser, x, grid, cond, generator, on_step, eta, dpmpp_3m_sde_step, keep=2)
