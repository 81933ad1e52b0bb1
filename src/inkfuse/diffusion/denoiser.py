"""The network as the samplers see it: x_t, t, condition in; a prediction of x_0 and ε out.

Networks are trained to output ε, x_0 or v (Salimans & Ho 2022, v = sqrt(ᾱ) ε − sqrt(1−ᾱ) x_0).
All three are linear in each other given x_t, so `Denoiser` converts once and every sampler
works with `Prediction(x0, eps)` without branching on the target.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor, nn

from inkfuse.diffusion.conditioning import Condition
from inkfuse.diffusion.schedule import Schedule, _expand

TARGETS = ("eps", "x0", "v")


@dataclass
class Prediction:
    x0: Tensor
    eps: Tensor


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
    """Wraps (network, schedule, target) into `denoiser(x_t, t, cond) -> Prediction`.

    `clip` clamps the predicted x_0 to [-clip, clip] (pixel data lives in [-1, 1]) and
    recomputes ε from the clamped x_0, which stabilises few-step sampling of pixel models; set it
    to None for latent models whose values are unbounded.
    """

    def __init__(self, net: nn.Module, schedule: Schedule, target: str = "eps",
                 clip: float | None = 1.0):
        self.net, self.schedule, self.target, self.clip = net, schedule, target, clip

    def __call__(self, x: Tensor, t: Tensor, cond: Condition | None = None) -> Prediction:
        t = t.expand(x.shape[0]) if t.ndim == 0 else t
        out = self.net(x, t, cond).to(x.dtype)
        a, s = coefficients(self.schedule, t, x)
        pred = to_prediction(self.target, out, x, a, s)
        if self.clip is not None:
            x0 = pred.x0.clamp(-self.clip, self.clip)
            pred = Prediction(x0, (x - a * x0) / s)
        return pred
