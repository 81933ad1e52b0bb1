"""Imagen's dynamic thresholding (Saharia et al. 2022, §2.3) and plain static clipping, applied
to the *guided* prediction.

At a high guidance weight the guided x̂0 = (x_t − sqrt(1 − ᾱ) ε̂) / sqrt(ᾱ) leaves the data's
[-1, 1] range, and a sampler that keeps stepping towards it saturates: flat over-bright colours,
lost detail. Static clipping clamps x̂0 to [-1, 1]; dynamic thresholding picks, per sample, s =
the `percentile` of |x̂0| (at least 1), clamps x̂0 to [-s, s] and divides by s, so a sample that
overshoots is pulled back as a whole instead of having its brightest pixels cut off. ε̂ is
recomputed from the new x̂0 so that x_t = sqrt(ᾱ) x̂0 + sqrt(1 − ᾱ) ε̂ still holds and every
sampler (they read x̂0, ε̂ or both) sees the same prediction.

Pixel models only: latents have no fixed range to threshold to.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from inkfuse.diffusion.conditioning import Condition
from inkfuse.diffusion.denoiser import Prediction, coefficients
from inkfuse.diffusion.schedule import Schedule

THRESHOLDING = ("none", "static", "dynamic")


def dynamic_threshold(x0: Tensor, percentile: float) -> Tensor:
    """Imagen's rule on x0 [B, ...]: s_b = max(1, quantile_p |x0_b|), then
    x0_b ← clamp(x0_b, ±s_b) / s_b."""
    s = torch.quantile(x0.abs().flatten(1).float(), percentile, dim=1).clamp(min=1.0)
    s = s.to(x0.dtype).reshape(-1, *([1] * (x0.ndim - 1)))
    return torch.maximum(torch.minimum(x0, s), -s) / s


class Thresholded:
    """A denoiser (guided or not) whose x̂0 is clipped (`static`) or dynamically thresholded
    (`dynamic`, at `percentile`), with ε̂ recomputed; same call signature as `Denoiser`."""

    def __init__(self, denoiser: Callable[..., Prediction], schedule: Schedule, mode: str,
                 percentile: float = 0.995):
        if mode not in THRESHOLDING[1:]:
            raise ValueError(f"unknown thresholding {mode!r} (choose static or dynamic)")
        self.denoiser, self.schedule, self.mode, self.percentile = (denoiser, schedule, mode,
                                                                     percentile)

    def __call__(self, x: Tensor, t: Tensor, cond: Condition | None = None) -> Prediction:
        pred = self.denoiser(x, t, cond)
        t = t.expand(x.shape[0]) if t.ndim == 0 else t
        x0 = (pred.x0.clamp(-1, 1) if self.mode == "static"
              else dynamic_threshold(pred.x0, self.percentile))
        a, s = coefficients(self.schedule, t, x)
        return Prediction(x0, (x - a * x0) / s, pred.var_frac)


def threshold(denoiser: Callable[..., Prediction], schedule: Schedule, mode: str = "none",
              percentile: float = 0.995) -> Callable[..., Prediction]:
    """`denoiser` with its x̂0 thresholded by `mode` (none, static, dynamic)."""
    return denoiser if mode == "none" else Thresholded(denoiser, schedule, mode, percentile)
