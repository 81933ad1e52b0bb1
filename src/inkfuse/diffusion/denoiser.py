"""The network under its parameterisation: what training regresses and what samplers read.

Networks are trained to output ε, x_0 or v (Salimans & Ho 2022, v = sqrt(ᾱ) ε − sqrt(1−ᾱ) x_0).
All three are linear in each other given x_t, so `Denoiser` converts once: its `loss` forms
x_t and regresses the target, its call turns the output into `Prediction(x0, eps)` for every
sampler, and the two cannot disagree about the target or the null condition (as EDM's
`EDMPrecond` serves both `EDMLoss` and the samplers, Karras et al. 2022).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from inkfuse.diffusion.conditioning import Condition
from inkfuse.diffusion.gaussian import discretized_gaussian_nll, gaussian_nll, normal_kl
from inkfuse.diffusion.objectives import loss_weight
from inkfuse.diffusion.schedule import Schedule, _expand

TARGETS = ("eps", "x0", "v")


@dataclass
class Prediction:
    x0: Tensor
    eps: Tensor
    # learned variance (Nichol & Dhariwal 2021): per element, where the reverse step's log
    # variance lies between log β̃ (0) and log β (1) of whatever step a sampler takes
    var_frac: Tensor | None = None


def step_variance(ab_t: Tensor, ab_prev: Tensor, var_frac: Tensor | None) -> Tensor:
    """The variance of the reverse step from ᾱ_t to ᾱ_prev: the posterior's β̃ = β (1 − ᾱ_prev)
    / (1 − ᾱ_t) (DDPM eq. 7) with β = 1 − ᾱ_t / ᾱ_prev, or with a learned `var_frac` v
    exp(v log β + (1 − v) log β̃) (Nichol & Dhariwal eq. 15). Where β̃ is 0 (the step to
    ᾱ_prev = 1, the decoder's) the posterior is a point and both ends are β."""
    beta = 1 - ab_t / ab_prev
    tilde = beta * (1 - ab_prev) / (1 - ab_t)
    if var_frac is None:
        return tilde
    low = torch.where(tilde > 0, tilde, beta)
    return torch.exp(var_frac * beta.log() + (1 - var_frac) * low.log())


def coefficients(schedule: Schedule, t: Tensor, like: Tensor) -> tuple[Tensor, Tensor]:
    """(sqrt(ᾱ_t), sqrt(1 − ᾱ_t)) shaped to broadcast over `like`."""
    ab = _expand(schedule.alpha_bar(t), like)
    return ab.sqrt(), (1 - ab).sqrt()


def training_target(target: str, x0: Tensor, eps: Tensor, a: Tensor, s: Tensor) -> Tensor:
    """What the network regresses: ε, x_0 or v = a ε − s x_0."""
    return {"eps": eps, "x0": x0, "v": a * eps - s * x0}[target]


def to_prediction(target: str, out: Tensor, x: Tensor, a: Tensor, s: Tensor) -> Prediction:
    """Invert `training_target` given x_t = a x_0 + s ε."""
    if target == "eps":
        return Prediction((x - s * out) / a, out)
    if target == "x0":
        return Prediction(out, (x - a * out) / s)
    return Prediction(a * x - s * out, s * x + a * out)  # v


class Denoiser:
    """Wraps (network, schedule, target) into `denoiser(x_t, t, cond) -> Prediction` and
    `denoiser.loss(x0, cond) -> Tensor`.

    `net(x, t, **tensors)` is any callable module (a U-Net, or its DDP or compiled wrapper); it
    receives the condition as the keyword tensors of `Condition.inputs`, and nothing when there
    is no condition.

    `null` is the empty prompt's encoding (one row) for text models, whose null condition is
    not learned: dropped rows, and every row of an unconditional call, become it before the
    network runs, in training and sampling alike. Class and context models leave it None and
    read `drop` with their learned null embedding.

    `clip` clamps the predicted x_0 to [-clip, clip] (pixel data lives in [-1, 1]) and
    recomputes ε from the clamped x_0, which stabilises few-step sampling of pixel models; set it
    to None for latent models whose values are unbounded. Training never clips.

    `learn_variance`: the network's output has twice the channels, the second half v ∈ [-1, 1]
    placing the reverse variance between β̃ and β (`Prediction.var_frac` = (v + 1) / 2), and the
    loss adds `vlb_weight` · T · L_t of the variational bound in bits per dimension, with the
    mean held fixed so that only the variance learns from it (L_hybrid, Nichol & Dhariwal 2021
    §3.1); L_0 is the discretised 8-bit decoder where `discrete`, else a Gaussian (latents).
    """

    def __init__(self, net: Callable[..., Tensor], schedule: Schedule, target: str = "eps",
                 clip: float | None = 1.0, null: Condition | None = None, *,
                 learn_variance: bool = False, vlb_weight: float = 1e-3, discrete: bool = True):
        if target not in TARGETS:
            raise ValueError(f"unknown target {target!r} (choose from {', '.join(TARGETS)})")
        self.net, self.schedule, self.target, self.clip = net, schedule, target, clip
        self.null = null
        self.learn_variance, self.vlb_weight, self.discrete = (learn_variance, vlb_weight,
                                                               discrete)

    def inputs(self, cond: Condition | None, batch: int) -> dict[str, Tensor]:
        """The network's keyword tensors for `cond` on a batch of `batch` samples."""
        if self.null is None:
            return {} if cond is None else cond.inputs()
        cond = self.null.expand(batch) if cond is None else cond.with_null(self.null)
        # every row now holds a prompt: no drop mask is left for the network to read
        return {k: v for k, v in cond.inputs().items() if k != "drop"}

    def __call__(self, x: Tensor, t: Tensor, cond: Condition | None = None) -> Prediction:
        t = t.expand(x.shape[0]) if t.ndim == 0 else t
        out = self.net(x, t, **self.inputs(cond, x.shape[0])).to(x.dtype)
        frac = None
        if self.learn_variance:
            out, v = out.chunk(2, dim=1)
            frac = (v + 1) / 2
        a, s = coefficients(self.schedule, t, x)
        pred = to_prediction(self.target, out, x, a, s)
        if self.clip is not None:
            x0 = pred.x0.clamp(-self.clip, self.clip)
            pred = Prediction(x0, (x - a * x0) / s)
        pred.var_frac = frac
        return pred

    def loss(self, x0: Tensor, cond: Condition | None, *, weighting: str = "none",
             gamma: float = 5.0, generator: torch.Generator | None = None) -> Tensor:
        """Sample t ~ U{0..T-1}, then ε ~ N(0, I) (in this order, from `generator`, so that a
        seeded step draws the same noise), form x_t and return the weighted target MSE (see
        `loss_weight`), averaged over the batch."""
        b = x0.shape[0]
        t = torch.randint(0, self.schedule.T, (b,), generator=generator, device=x0.device)
        eps = torch.randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
        a, s = coefficients(self.schedule, t, x0)
        x_t = self.schedule.q_sample(x0, t, eps)  # [B, C, H, W] = a x0 + s ε
        out = self.net(x_t, t, **self.inputs(cond, b))
        if self.learn_variance:
            out, v = out.float().chunk(2, dim=1)
        # the target and the MSE in float32, whatever precision autocast ran the network in
        mse = (out.float() - training_target(self.target, x0, eps, a, s)).pow(2).flatten(1).mean(1)
        weight = loss_weight(self.schedule.snr(t).to(mse), self.target, weighting, gamma)
        loss = (weight * mse).mean()
        if self.learn_variance:
            frozen = to_prediction(self.target, out.detach(), x_t.float(), a, s)  # mean fixed
            vlb = self.vlb_term(x0.float(), x_t.float(), t, frozen.x0, (v + 1) / 2)
            loss = loss + self.vlb_weight * self.schedule.T * vlb.mean()
        return loss

    def vlb_term(self, x0: Tensor, x_t: Tensor, t: Tensor, x0_hat: Tensor,
                 var_frac: Tensor) -> Tensor:
        """L_t of the variational bound for each sample [B], in bits per dimension: the KL of
        the posterior q(x_{t−1} | x_t, x_0) from the model's step N(μ(x_t, x̂_0), σ²) for t > 0,
        the decoder's −log p(x_0 | x_t) at t = 0 (DDPM eq. 5 and 13)."""
        ab_t = _expand(self.schedule.alpha_bar(t), x_t)
        ab_prev = _expand(torch.where(t > 0, self.schedule.alpha_bar((t - 1).clamp(min=0)),
                                      torch.ones_like(t, dtype=ab_t.dtype)), x_t)
        beta = 1 - ab_t / ab_prev
        c0 = ab_prev.sqrt() * beta / (1 - ab_t)  # the posterior mean's weight on x_0
        var = step_variance(ab_t, ab_prev, var_frac)
        tilde = step_variance(ab_t, ab_prev, None)
        terms = normal_kl(c0 * x0, torch.where(tilde > 0, tilde, var), c0 * x0_hat,
                          var).flatten(1).mean(1)
        first = t == 0  # the decoder's rows only, in float64: a normal CDF far in its tail
        if first.any():  # has an infinite derivative that would poison the masked-out rows
            x, m, v = (u[first].double() for u in (x0, x0_hat, var))
            nll = (discretized_gaussian_nll(x, m, v.sqrt()) if self.discrete
                   else gaussian_nll(x, m, v))
            terms = terms.index_put((first.nonzero()[:, 0],), nll.flatten(1).mean(1).to(terms))
        return terms / math.log(2)
