"""Restart sampling (Xu et al. 2023, "Restart Sampling for Improving Generative Processes").

The main walk is Heun's method on the probability-flow ODE (EDM Algorithm 1). When it first
reaches a grid level σ_j ≤ t_min (`restart_sigma_min`), it restarts K times
(`restart_times`): a forward jump to t_max with fresh noise (Restart, eq. 3)

    x ← x + sqrt(t_max² − σ_j²) z,   z ~ N(0, I)

then the ODE is solved back from t_max to σ_j with `restart_steps` Heun steps on a Karras
grid (EDM eq. 5, ρ = 7). The added noise contracts the errors the ODE accumulated so far, while
the ODE keeps the steps large. Defaults t_min = 0.1, t_max = 2, K = 1, 9 restart steps: the
setting of the paper's Stable Diffusion runs for small budgets (20–35 steps; the authors' web-UI
script, which also takes K = 2 from 36 steps on). N main steps then cost
2N − 1 + 2 K restart_steps model calls (the registry's `nfe`; no restart where the grid never
goes down to t_min, as for a single step).

Default grid: `karras_timesteps` with σ_max capped at EDM's 80, as for `heun`.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from inkfuse.diffusion.conditioning import Condition
from inkfuse.diffusion.denoiser import Prediction
from inkfuse.diffusion.samplers.euler import euler_step, heun_step
from inkfuse.diffusion.samplers.sigma import denoise, from_vp, sigma_grid, step_of, to_vp
from inkfuse.diffusion.samplers.walk import DenoiserFn, OnStep, randn
from inkfuse.diffusion.schedule import Schedule
from inkfuse.errors import ConfigError


def karras_sigmas(sigma_max: float, sigma_min: float, steps: int, rho: float = 7.0) -> list[float]:
    """σ_k = (σ_max^{1/ρ} + k/steps (σ_min^{1/ρ} − σ_max^{1/ρ}))^ρ, k = 0..steps (EDM eq. 5)."""
    hi, lo = sigma_max ** (1 / rho), sigma_min ** (1 / rho)
    return [(hi + k / steps * (lo - hi)) ** rho for k in range(steps + 1)]


def restart_jump(x: Tensor, sigma: float, sigma_max: float, z: Tensor) -> Tensor:
    """x ← x + sqrt(t_max² − σ²) z: the forward process from σ up to t_max (Restart eq. 3)."""
    return x + math.sqrt(sigma_max**2 - sigma**2) * z


def ode_step(denoiser: DenoiserFn, x: Tensor, sigma: float, t: Tensor, sigma_next: float,
             t_next: Tensor, cond: Condition | None) -> tuple[Tensor, Prediction]:
    """One Heun step from σ to σ_next (Euler when σ_next = 0); returns (x_next, D(x; σ))."""
    pred = denoise(denoiser, x, sigma, t, cond)
    x_next = euler_step(x, pred.x0, sigma, sigma_next)
    if sigma_next > 0:
        pred_next = denoise(denoiser, x_next, sigma_next, t_next, cond)
        x_next = heun_step(x, x_next, pred.x0, pred_next.x0, sigma, sigma_next)
    return x_next, pred


def restart_interval(schedule: Schedule, x: Tensor, sigma: float, sigma_max: float,
                     steps: int) -> tuple[list[float], list[Tensor]]:
    """The restart grid from t_max (capped at the schedule's σ_max) down to σ: levels and steps."""
    top = min(sigma_max, schedule.sigmas[-1].item())
    sigmas = [*karras_sigmas(top, sigma, steps)[:-1], sigma]  # land exactly on σ
    return sigmas, [step_of(schedule, s, x) for s in sigmas]


@torch.no_grad()
def restart(
    denoiser: DenoiserFn, x: Tensor, grid: Tensor, cond: Condition | None = None, *,
    generator: torch.Generator | None = None, on_step: OnStep | None = None,
    restart_sigma_min: float = 0.1, restart_sigma_max: float = 2.0, restart_times: int = 1,
    restart_steps: int = 9,
) -> Tensor:
    """Restart sampling from VP noise `x` at grid[0] down to σ = 0: Heun steps on `grid`, and at
    the first grid level σ_j ≤ restart_sigma_min, `restart_times` jumps up to
    restart_sigma_max, each followed by `restart_steps` Heun steps back to σ_j. `on_step` sees
    each main step (after its restarts) with that step's first prediction."""
    if not 0 < restart_sigma_min < restart_sigma_max or restart_steps < 1:
        raise ConfigError("restart needs 0 < restart_sigma_min < restart_sigma_max and "
                          f"restart_steps ≥ 1 (got {restart_sigma_min}, {restart_sigma_max}, "
                          f"{restart_steps})")
    schedule = denoiser.schedule
    sigmas = sigma_grid(schedule, grid)
    steps = [*grid, grid[-1]]  # t of σ_N = 0 is never used: the last step is Euler
    x = from_vp(x, sigmas[0])
    restarted = False
    for i, t in enumerate(grid):
        x, pred = ode_step(denoiser, x, sigmas[i], t, sigmas[i + 1], steps[i + 1], cond)
        if not restarted and 0 < sigmas[i + 1] <= restart_sigma_min:
            restarted = True
            levels, ts = restart_interval(schedule, x, sigmas[i + 1], restart_sigma_max,
                                          restart_steps)
            ts[-1] = steps[i + 1]  # the grid's own step at σ_j
            for _ in range(restart_times):
                x = restart_jump(x, sigmas[i + 1], levels[0], randn(x, generator))
                for k in range(restart_steps):
                    x, _ = ode_step(denoiser, x, levels[k], ts[k], levels[k + 1], ts[k + 1], cond)
        if on_step is not None:
            on_step(i, to_vp(x, sigmas[i + 1]), pred)
    return x
