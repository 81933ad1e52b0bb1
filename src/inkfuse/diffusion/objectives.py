"""The training objective: noise the data in closed form, regress the target, weight by SNR.

With ε-prediction and no weighting this is DDPM's L_simple (Ho et al. 2020, eq. 14). Min-SNR-γ
(Hang et al. 2023) caps the weight of low-noise steps, which otherwise dominate and slow down
convergence; written per target so that every target optimises the same x_0-space weighting.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from inkfuse.diffusion.conditioning import Condition
from inkfuse.diffusion.denoiser import coefficients, training_target
from inkfuse.diffusion.schedule import Schedule


def loss_weight(snr: Tensor, target: str, weighting: str, gamma: float = 5.0) -> Tensor:
    """Per-sample weight on the target-space MSE.

    min-snr: min(SNR, γ) in x_0 space. An ε-MSE equals SNR × x_0-MSE and a v-MSE equals
    (SNR + 1) × x_0-MSE, hence the divisions below.
    """
    if weighting == "none":
        return torch.ones_like(snr)
    clipped = snr.clamp(max=gamma)
    return {"x0": clipped, "eps": clipped / snr, "v": clipped / (snr + 1)}[target]


def diffusion_loss(
    net: nn.Module, schedule: Schedule, x0: Tensor, cond: Condition | None, *,
    target: str = "eps", weighting: str = "none", gamma: float = 5.0,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Sample t ~ U{0..T-1} and ε ~ N(0, I), form x_t, and return the weighted MSE."""
    b = x0.shape[0]
    t = torch.randint(0, schedule.T, (b,), generator=generator, device=x0.device)
    eps = torch.randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
    a, s = coefficients(schedule, t, x0)
    x_t = schedule.q_sample(x0, t, eps)
    out = net(x_t, t, cond)
    mse = (out.float() - training_target(target, x0, eps, a, s)).pow(2).flatten(1).mean(1)
    return (loss_weight(schedule.snr(t).to(mse), target, weighting, gamma) * mse).mean()
