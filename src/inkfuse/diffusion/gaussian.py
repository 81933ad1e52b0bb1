"""Gaussian terms of the variational bound, each a closed form: what the learned-variance loss
(`Denoiser.loss`, Nichol & Dhariwal 2021) and the likelihood metrics
(`metrics.likelihood`) both evaluate."""

from __future__ import annotations

import math

import torch
from torch import Tensor

HALF_BIN = 1 / 255  # half the width of one 8-bit level when 0..255 maps to [-1, 1]


def normal_kl(mean1: Tensor, var1: Tensor, mean2: Tensor, var2: Tensor) -> Tensor:
    """KL(N(mean1, var1) ‖ N(mean2, var2)) per element, in nats."""
    return 0.5 * (torch.log(var2 / var1) + (var1 + (mean1 - mean2) ** 2) / var2 - 1)


def gaussian_nll(x: Tensor, mean: Tensor, var: Tensor) -> Tensor:
    """−log N(x; mean, var) per element, in nats (the decoder of continuous latents)."""
    return 0.5 * (torch.log(2 * math.pi * var) + (x - mean) ** 2 / var)


def discretized_gaussian_nll(x: Tensor, mean: Tensor, std: Tensor) -> Tensor:
    """−log P(x) per element for x on the 256 levels of [-1, 1] under N(mean, std²) integrated
    over x's bin [x − 1/255, x + 1/255], the bins at −1 and 1 extended to ∓∞ (Ho et al.,
    eq. 13), in nats.

    Computed as a difference of normal CDFs in log space on the side of the bin away from the
    mean, where neither CDF is close to 1, so a bin far in a tail keeps its precision (Ho et
    al.'s code approximates the CDF and floors the probability at 1e-12 instead)."""
    lo, hi = (x - HALF_BIN - mean) / std, (x + HALF_BIN - mean) / std
    # Φ(hi) − Φ(lo) = Φ(−lo) − Φ(−hi): use the form whose upper end is at or below the middle
    flip = lo + hi > 0
    a, b = torch.where(flip, -hi, lo), torch.where(flip, -lo, hi)
    log_b = torch.special.log_ndtr(b)
    inner = log_b + torch.log(-torch.expm1(torch.special.log_ndtr(a) - log_b))
    # the end bins reach to ∓∞: Φ(hi) and 1 − Φ(lo) = Φ(−lo), never an infinite argument,
    # whose derivative (0 · ∞) would poison the gradients of the learned-variance loss
    log_p = torch.where(x <= -1 + HALF_BIN / 2, torch.special.log_ndtr(hi),
                        torch.where(x >= 1 - HALF_BIN / 2, torch.special.log_ndtr(-lo), inner))
    return -log_p
