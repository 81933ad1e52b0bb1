"""Heun's 2nd-order method on the EDM probability-flow ODE (Karras et al. 2022, Algorithms 1–2).

An Euler step to σ_next, a second model call there, and the trapezoidal average of the two
slopes. The last step (to σ = 0, where d' = (x − D)/σ is undefined) stays Euler (Alg. 2 line 9),
so N steps cost 2N − 1 model calls (`samplers.nfe`). Churn as in `euler`.

The trapezoid in σ is poor when one step spans a huge σ ratio: the cosine schedule's last step
jumps to σ_{T−1} ≈ 2·10⁴, so with few steps start the grid lower there,
`karras_timesteps(schedule, steps, sigma_max=80.0)` (EDM's σ_max).

Default grid: `karras_timesteps` (EDM eq. 5, ρ = 7).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from inkfuse.diffusion.conditioning import Condition
from inkfuse.diffusion.samplers.euler import (
    churn_gamma,
    churn_up,
    denoise,
    euler_step,
    from_vp,
    sigma_grid,
    to_vp,
)
from inkfuse.diffusion.samplers.walk import OnStep


def heun_step(x: Tensor, x_next: Tensor, denoised: Tensor, denoised_next: Tensor, sigma: float,
              sigma_next: float) -> Tensor:
    """Correct the Euler guess x_next (Alg. 2 lines 10–11):
        d = (x − D(x; σ)) / σ,  d' = (x_next − D(x_next; σ_next)) / σ_next,
        x_next = x + (σ_next − σ) (d + d') / 2."""
    d = (x - denoised) / sigma
    d_next = (x_next - denoised_next) / sigma_next
    return x + (sigma_next - sigma) * (d + d_next) / 2


@torch.no_grad()
def heun(
    denoiser: Callable, x: Tensor, timesteps: Tensor, cond: Condition | None = None, *,
    churn: float = 0.0, churn_sigma_min: float = 0.0, churn_sigma_max: float = math.inf,
    churn_noise: float = 1.0, generator: torch.Generator | None = None,
    on_step: OnStep | None = None,
) -> Tensor:
    """Heun from VP noise `x` at timesteps[0] down to σ = 0; churn = 0 is EDM's Algorithm 1.

    `on_step` is called once per step (after the correction) with the first prediction.
    """
    schedule = denoiser.schedule
    sigmas = sigma_grid(schedule, timesteps)
    x = from_vp(x, sigmas[0])
    for i, t in enumerate(timesteps):
        gamma = churn_gamma(sigmas[i], len(timesteps), churn, churn_sigma_min, churn_sigma_max)
        x, sigma, t_hat = churn_up(schedule, x, sigmas[i], t, gamma, churn_noise, generator)
        pred = denoise(denoiser, x, sigma, t_hat, cond)
        x_next = euler_step(x, pred.x0, sigma, sigmas[i + 1])
        if sigmas[i + 1] > 0:
            pred_next = denoise(denoiser, x_next, sigmas[i + 1], timesteps[i + 1], cond)
            x_next = heun_step(x, x_next, pred.x0, pred_next.x0, sigma, sigmas[i + 1])
        x = x_next
        if on_step is not None:
            on_step(i, to_vp(x, sigmas[i + 1]), pred)
    return x
