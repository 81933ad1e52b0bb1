"""DPM-Solver++(2M) (Lu et al. 2022, "DPM-Solver++"): a multistep exponential integrator in
log-SNR time, data prediction.

In σ-space (x_σ = x_0 + σ ε, see `sigma`) with λ = −log σ the ODE solution is exactly

    x(λ_next) = (σ_next/σ) x(λ) + σ_next ∫_λ^λ_next e^λ' x̂_0(λ') dλ'   (DPM-Solver++ §4.1, α = 1)

and the solvers differ only in how they interpolate x̂_0(λ) across the step: 2M extrapolates
linearly through the previous step's x̂_0, so each step costs one model call. Deterministic. The
last step (to σ = 0, λ = ∞) is first order: x_0 = x̂_0.

Default grid: trailing integer steps; on cosine-schedule models it beats the Karras grid at few
steps (benchmarks/results/quality_vs_steps_*.md).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from inkfuse.diffusion.conditioning import Condition
from inkfuse.diffusion.samplers.sigma import denoise, from_vp, sigma_grid, to_vp
from inkfuse.diffusion.samplers.walk import DenoiserFn, OnStep


def lam(sigma: float) -> float:
    """λ = log(α/σ_VP) = −log σ: half the log-SNR."""
    return -math.log(sigma)


def dpmpp_2m_step(x: Tensor, denoised: Tensor, sigma: float, sigma_next: float,
                  old_denoised: Tensor | None = None, sigma_prev: float | None = None) -> Tensor:
    """One DPM-Solver++(2M) step (Algorithm 2), here with α = 1:
        h = λ_next − λ,   r = (λ − λ_prev) / h,
        D = (1 + 1/(2r)) x̂_0 − 1/(2r) x̂_0,prev       (D = x̂_0 on the first step: DDIM)
        x_next = (σ_next/σ) x − (e^{−h} − 1) D
    On the last step (σ_next = 0, h = ∞) the exact solution is x̂_0.
    """
    if sigma_next == 0:
        return denoised
    h = lam(sigma_next) - lam(sigma)
    d = denoised
    if old_denoised is not None:
        r = (lam(sigma) - lam(sigma_prev)) / h
        d = (1 + 1 / (2 * r)) * denoised - 1 / (2 * r) * old_denoised
    return (sigma_next / sigma) * x - math.expm1(-h) * d


@torch.no_grad()
def dpmpp_2m(
    denoiser: DenoiserFn, x: Tensor, grid: Tensor, cond: Condition | None = None, *,
    generator: torch.Generator | None = None, on_step: OnStep | None = None,
) -> Tensor:
    """DPM-Solver++(2M) from VP noise `x` at grid[0] down to σ = 0 (deterministic)."""
    sigmas = sigma_grid(denoiser.schedule, grid)
    x = from_vp(x, sigmas[0])
    old = None  # x̂_0 at the previous grid point
    for i, t in enumerate(grid):
        pred = denoise(denoiser, x, sigmas[i], t, cond)
        x = dpmpp_2m_step(x, pred.x0, sigmas[i], sigmas[i + 1], old, sigmas[i - 1] if i else None)
        old = pred.x0
        if on_step is not None:
            on_step(i, to_vp(x, sigmas[i + 1]), pred)
    return x
