"""Classifier-free guidance (Ho & Salimans 2022) as a wrapper around a denoiser.

Convention: ε̂ = ε_u + w (ε_c − ε_u). w = 0 is unconditional, w = 1 plain conditional sampling,
w > 1 pushes samples towards the condition. The DLI course writes (1 + w') ε_c − w' ε_u, which is
the same thing with w = 1 + w'. Both branches run in one batched forward pass.

The unconditional branch is the same condition with every row marked dropped; what a dropped row
reads (a learned null embedding, or the empty prompt that `Denoiser` substitutes) is decided
below guidance, identically to training.
"""

from __future__ import annotations

import torch
from torch import Tensor

from inkfuse.diffusion.conditioning import Condition
from inkfuse.diffusion.denoiser import Denoiser, Prediction, coefficients


def _std(x: Tensor) -> Tensor:
    return x.flatten(1).std(dim=1).reshape(-1, *([1] * (x.ndim - 1)))


class Guided:
    """A denoiser that returns the guided prediction; same call signature as `Denoiser`.

    With `weights` (a_1..a_k, summing to 1) the condition holds k conditions per sample, stacked
    as k blocks of the batch, and the guided noise is composed from all of them (Liu et al.
    2022, "Composable Diffusion"): ε̂ = ε_u + w Σ a_i (ε_i − ε_u). One condition is plain CFG.
    """

    def __init__(self, denoiser: Denoiser, w: float, rescale: float = 0.0,
                 weights: tuple[float, ...] = (1.0,)):
        self.denoiser, self.w, self.rescale, self.weights = denoiser, w, rescale, weights
        self.schedule = denoiser.schedule

    def __call__(self, x: Tensor, t: Tensor, cond: Condition | None = None) -> Prediction:
        k = len(self.weights)
        if cond is None or (self.w == 1.0 and k == 1):
            return self.denoiser(x, t, cond)
        t = t.expand(x.shape[0]) if t.ndim == 0 else t
        null = cond[:x.shape[0]].null_like()
        if self.w == 0.0:
            return self.denoiser(x, t, null)
        out = self.denoiser(x.repeat(k + 1, *[1] * (x.ndim - 1)), t.repeat(k + 1),
                            Condition.cat([cond, null]))
        *eps_cs, eps_u = out.eps.chunk(k + 1)
        delta = sum(a * (e - eps_u) for a, e in zip(self.weights, eps_cs, strict=True))
        eps = eps_u + self.w * delta
        if self.rescale > 0:
            # Lin et al. 2024 eq. 15-16: match the guided std to the conditional one, then blend.
            eps_c = eps_u + delta
            eps = self.rescale * eps * (_std(eps_c) / _std(eps)) + (1 - self.rescale) * eps
        a, s = coefficients(self.schedule, t, x)
        x0 = (x - s * eps) / a
        if not bool((a > 0).all()):  # ᾱ = 0 (zero terminal SNR): guide x̂0, affine in ε̂ elsewhere
            *x0_cs, x0_u = out.x0.chunk(k + 1)
            guided = x0_u + self.w * sum(c_w * (c - x0_u)
                                         for c_w, c in zip(self.weights, x0_cs, strict=True))
            x0 = torch.where(a > 0, x0, guided)
        # a learned variance is the (first) conditional branch's, as in guided diffusion
        frac = None if out.var_frac is None else out.var_frac.chunk(k + 1)[0]
        return Prediction(x0, eps, frac)


def cfg(denoiser: Denoiser, w: float, rescale: float = 0.0,
        weights: tuple[float, ...] = (1.0,)) -> Guided:
    """Wrap `denoiser` with classifier-free guidance of weight `w` (see module docstring)."""
    return Guided(denoiser, w, rescale, weights)
