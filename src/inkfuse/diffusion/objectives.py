"""The weighting of the training objective across noise levels.

With ε-prediction and no weighting the loss is DDPM's L_simple (Ho et al. 2020, eq. 14). Min-SNR-γ
(Hang et al. 2023) caps the weight of low-noise steps, which otherwise dominate and slow down
convergence; written per target so that every target optimises the same x_0-space weighting.
The loss itself is `Denoiser.loss`, next to the conversion it shares with sampling.
"""

from __future__ import annotations

import torch
from torch import Tensor


def loss_weight(snr: Tensor, target: str, weighting: str, gamma: float = 5.0) -> Tensor:
    """Per-sample weight on the target-space MSE.

    min-snr: min(SNR, γ) in x_0 space. An ε-MSE equals SNR × x_0-MSE and a v-MSE equals
    (SNR + 1) × x_0-MSE, hence the divisions below.
    """
    if weighting == "none":
        return torch.ones_like(snr)
    clipped = snr.clamp(max=gamma)
    return {"x0": clipped, "eps": clipped / snr, "v": clipped / (snr + 1)}[target]
