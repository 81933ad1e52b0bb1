"""Heun's 2nd-order method on the EDM probability-flow ODE (Karras et al. 2022, Algorithms 1–2).

An Euler step to σ_next, a second model call there, and the trapezoidal average of the two
slopes. The last step (to σ = 0, where d' = (x − D)/σ is undefined) stays Euler (Alg. 2 line 9),
so N steps cost 2N − 1 model calls (the registry's `nfe`). Churn as in `euler`.

Default grid: `karras_timesteps` (EDM eq. 5, ρ = 7) with σ_max capped at EDM's 80: the trapezoid
in σ is poor when one step spans a huge σ ratio, and the cosine schedule's last step jumps to
σ_{T−1} ≈ 2·10⁴.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from inkfuse.diffusion.conditioning import Condition
from inkfuse.diffusion.samplers.euler import edm_sampler, heun_step
from inkfuse.diffusion.samplers.walk import DenoiserFn, OnStep


def heun(
    denoiser: DenoiserFn, x: Tensor, grid: Tensor, cond: Condition | None = None, *,
    generator: torch.Generator | None = None, on_step: OnStep | None = None,
    churn: float = 0.0, churn_sigma_min: float = 0.0, churn_sigma_max: float = math.inf,
    churn_noise: float = 1.0,
) -> Tensor:
    """Heun from VP noise `x` at grid[0] down to σ = 0; churn = 0 is EDM's Algorithm 1.

    `on_step` is called once per step (after the correction) with the first prediction.
    """
    return edm_sampler(denoiser, x, grid, cond, second_order=True, generator=generator,
                       on_step=on_step, churn=churn, churn_sigma_min=churn_sigma_min,
                       churn_sigma_max=churn_sigma_max, churn_noise=churn_noise)


__all__ = ["heun", "heun_step"]
