"""Heun's 2nd-order method on the EDM probability-flow ODE (Karras et al. 2022, Algorithms 1–2).

An Euler step to σ_next, a second model call there, and the trapezoidal average of the two
slopes. The last step (to σ = 0, where d' = (x − D)/σ is undefined) stays Euler (Alg. 2 line 9),
so N steps cost 2N − 1 model calls (`samplers.nfe`). Churn as in `euler`.

The trapezoid in σ is poor when one step spans a huge σ ratio: the cosine schedule's last step
jumps to σ_{T−1} ≈ 2·10⁴, so `timestep_grid` starts the Karras grid at EDM's σ_max = 80.

Default grid: `karras_timesteps` (EDM eq. 5, ρ = 7) with σ_max capped at EDM's 80.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from inkfuse.diffusion.conditioning import Condition
from inkfuse.diffusion.samplers.euler import edm_walk, heun_step
from inkfuse.diffusion.samplers.walk import OnStep

__all__ = ["heun", "heun_step"]


def heun(
    denoiser: Callable, x: Tensor, timesteps: Tensor, cond: Condition | None = None, *,
    churn: float = 0.0, churn_sigma_min: float = 0.0, churn_sigma_max: float = math.inf,
    churn_noise: float = 1.0, generator: torch.Generator | None = None,
    on_step: OnStep | None = None,
) -> Tensor:
    """Heun from VP noise `x` at timesteps[0] down to σ = 0; churn = 0 is EDM's Algorithm 1.

    `on_step` is called once per step (after the correction) with the first prediction.
    """
    return edm_walk(denoiser, x, timesteps, cond, heun=True, churn=churn,
                    churn_sigma_min=churn_sigma_min, churn_sigma_max=churn_sigma_max,
                    churn_noise=churn_noise, generator=generator, on_step=on_step)
