"""Euler on the probability-flow ODE in σ-space (Karras et al. 2022, "EDM", Algorithm 2).

Optional "churn" (Algorithm 2 lines 4–6) first raises σ to σ̂ = (1 + γ) σ by adding fresh
noise, then takes the ODE step from σ̂; churn = 0 is the deterministic Euler method. The churn
helpers are shared with `heun`; the σ-space view (x_σ, D(x; σ)) is in `sigma`.

Default grid: `karras_timesteps` (EDM eq. 5, ρ = 7) with σ_max capped at EDM's 80: a Karras
grid up to the cosine schedule's σ_{T−1} ≈ 2·10⁴ spends its first steps where x_0 is invisible.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from inkfuse.diffusion.conditioning import Condition
from inkfuse.diffusion.samplers.sigma import denoise, from_vp, sigma_grid, step_of, to_vp
from inkfuse.diffusion.samplers.walk import DenoiserFn, OnStep, randn
from inkfuse.diffusion.schedule import Schedule

# --- churn (EDM Algorithm 2, γ_i and lines 4–6) ---------------------------------------------------


def churn_gamma(sigma: float, steps: int, churn: float, sigma_min: float,
                sigma_max: float) -> float:
    """γ_i = min(S_churn / N, √2 − 1) if σ_i ∈ [S_tmin, S_tmax] else 0   (Alg. 2, γ_i)."""
    if churn <= 0 or not sigma_min <= sigma <= sigma_max:
        return 0.0
    return min(churn / steps, math.sqrt(2) - 1)


def churn_step(x: Tensor, sigma: float, sigma_hat: float, z: Tensor) -> Tensor:
    """x̂ = x + sqrt(σ̂² − σ²) z,  z ~ N(0, S_noise² I)   (Alg. 2 lines 4–6)."""
    return x + math.sqrt(sigma_hat**2 - sigma**2) * z


def churn_up(schedule: Schedule, x: Tensor, sigma: float, t: Tensor, gamma: float, noise: float,
             generator: torch.Generator | None) -> tuple[Tensor, float, Tensor]:
    """Raise the noise level from σ to σ̂ = (1 + γ) σ; returns (x̂, σ̂, t(σ̂)).

    σ̂ is capped at the schedule's σ_max: a network trained on T discrete steps has never seen
    more noise than σ_{T−1}.
    """
    sigma_hat = min(sigma * (1 + gamma), schedule.sigmas[-1].item())
    if sigma_hat <= sigma:
        return x, sigma, t
    x = churn_step(x, sigma, sigma_hat, noise * randn(x, generator))
    return x, sigma_hat, step_of(schedule, sigma_hat, x)


# --- Euler ---------------------------------------------------------------------------------------


def euler_step(x: Tensor, denoised: Tensor, sigma: float, sigma_next: float) -> Tensor:
    """x_next = x + (σ_next − σ) d,  d = (x − D(x; σ)) / σ   (Alg. 2 lines 7–8)."""
    d = (x - denoised) / sigma
    return x + (sigma_next - sigma) * d


def heun_step(x: Tensor, x_next: Tensor, denoised: Tensor, denoised_next: Tensor, sigma: float,
              sigma_next: float) -> Tensor:
    """Correct the Euler guess x_next (Alg. 2 lines 10–11):
        d = (x − D(x; σ)) / σ,  d' = (x_next − D(x_next; σ_next)) / σ_next,
        x_next = x + (σ_next − σ) (d + d') / 2."""
    d = (x - denoised) / sigma
    d_next = (x_next - denoised_next) / sigma_next
    return x + (sigma_next - sigma) * (d + d_next) / 2


@torch.no_grad()
def edm_sampler(
    denoiser: DenoiserFn, x: Tensor, grid: Tensor, cond: Condition | None, *, second_order: bool,
    generator: torch.Generator | None, on_step: OnStep | None, churn: float,
    churn_sigma_min: float, churn_sigma_max: float, churn_noise: float,
) -> Tensor:
    """EDM's Algorithm 2 from VP noise `x` at grid[0] down to σ = 0: churn up (lines 4–6), an
    Euler step (7–8) and, when `second_order`, Heun's correction with a second model call at
    σ_next (9–11), which the last step, to σ = 0, skips. `on_step` sees each step's first
    prediction."""
    schedule = denoiser.schedule
    sigmas = sigma_grid(schedule, grid)
    x = from_vp(x, sigmas[0])
    for i, t in enumerate(grid):
        gamma = churn_gamma(sigmas[i], len(grid), churn, churn_sigma_min, churn_sigma_max)
        x, sigma, t_hat = churn_up(schedule, x, sigmas[i], t, gamma, churn_noise, generator)
        pred = denoise(denoiser, x, sigma, t_hat, cond)
        x_next = euler_step(x, pred.x0, sigma, sigmas[i + 1])
        if second_order and sigmas[i + 1] > 0:
            pred_next = denoise(denoiser, x_next, sigmas[i + 1], grid[i + 1], cond)
            x_next = heun_step(x, x_next, pred.x0, pred_next.x0, sigma, sigmas[i + 1])
        x = x_next
        if on_step is not None:
            on_step(i, to_vp(x, sigmas[i + 1]), pred)
    return x


def euler(
    denoiser: DenoiserFn, x: Tensor, grid: Tensor, cond: Condition | None = None, *,
    generator: torch.Generator | None = None, on_step: OnStep | None = None,
    churn: float = 0.0, churn_sigma_min: float = 0.0, churn_sigma_max: float = math.inf,
    churn_noise: float = 1.0,
) -> Tensor:
    """Euler from VP noise `x` at grid[0] down to σ = 0 (EDM Algorithm 2 without lines 9–11).

    churn, churn_sigma_min, churn_sigma_max, churn_noise are EDM's S_churn, S_tmin, S_tmax
    (noise levels σ, not steps) and S_noise; churn = 0 (the default) is deterministic.
    """
    return edm_sampler(denoiser, x, grid, cond, second_order=False, generator=generator,
                       on_step=on_step, churn=churn, churn_sigma_min=churn_sigma_min,
                       churn_sigma_max=churn_sigma_max, churn_noise=churn_noise)
