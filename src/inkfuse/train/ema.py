"""Moving averages of the weights: what we sample from, since they are much smoother than the
last iterate of a noisy diffusion loss.

`EMA` is the classic one, of a fixed decay (with a warm-up). `PowerEMA` and the functions below
are post-hoc EMA (Karras et al. 2024, "Analyzing and Improving the Training Dynamics of
Diffusion Models", EDM2, Sec. 3 and Appendix C): an average whose profile over past steps is a
power function, so that its length scales with the training time, kept for two lengths and
saved as snapshots; any other length is reconstructed after training as the least-squares
combination of the snapshots (`posthoc_coefficients`, `combine`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from inkfuse.config.sections import SIGMA_REL_MAX  # γ = 0: the flat profile, a running mean
from inkfuse.errors import ConfigError


@torch.no_grad()
def _lerp_into(shadow: dict[str, Tensor], net: nn.Module, weight: float) -> None:
    """shadow ← shadow + weight (θ − shadow) for every float tensor of `net.state_dict()`;
    integer buffers (BatchNorm counters) are copied."""
    current = net.state_dict()
    floats = [k for k, v in shadow.items() if v.is_floating_point()]
    torch._foreach_lerp_([shadow[k] for k in floats], [current[k] for k in floats], weight)
    for k, v in shadow.items():
        if not v.is_floating_point():
            v.copy_(current[k])


class _Average:
    """A copy of a network's state dict that `update` moves towards the network."""

    def __init__(self, net: nn.Module):
        self.shadow = {k: v.detach().clone() for k, v in net.state_dict().items()}

    def state_dict(self) -> dict[str, Tensor]:
        return self.shadow

    def load_state_dict(self, tensors: dict[str, Tensor]) -> None:
        missing = set(self.shadow) ^ set(tensors)
        if missing:
            raise KeyError(f"EMA keys differ: {sorted(missing)[:3]}")
        for k, v in tensors.items():
            self.shadow[k].copy_(v)


class EMA(_Average):
    def __init__(self, net: nn.Module, decay: float):
        super().__init__(net)
        self.decay = decay

    def update(self, net: nn.Module, step: int) -> None:
        """shadow ← shadow + (1 − d)(θ − shadow); d warms up as (1 + k) / (10 + k) so early
        averages are not dominated by the random initialisation."""
        _lerp_into(self.shadow, net, 1 - min(self.decay, (1 + step) / (10 + step)))


# --- post-hoc EMA (EDM2) -------------------------------------------------------------------

def gamma_to_sigma_rel(gamma: float) -> float:
    """σ_rel = sqrt((γ + 1) / ((γ + 2)² (γ + 3)))   (EDM2 eq. 3): the standard deviation of the
    power-function profile (γ + 1) τ^γ / t^(γ+1) on [0, t], relative to t."""
    return math.sqrt((gamma + 1) / ((gamma + 2) ** 2 * (gamma + 3)))


def sigma_rel_to_gamma(sigma_rel: float) -> float:
    """The γ of a relative width σ_rel: eq. 3 squared and cleared of fractions is the cubic
    γ³ + 7γ² + (16 − σ_rel⁻²) γ + (12 − σ_rel⁻²) = 0, whose largest real root it is (as EDM2's
    `std_to_exp`). σ_rel must lie in (0, sqrt(1/12)), i.e. γ > 0."""
    if not 0 < sigma_rel < SIGMA_REL_MAX:
        raise ConfigError(f"sigma_rel = {sigma_rel:g} is outside (0, {SIGMA_REL_MAX:.4f}); "
                          "EDM2 uses 0.05 and 0.10, and sweeps about 0.01 to 0.25")
    c = sigma_rel**-2
    roots = np.roots([1.0, 7.0, 16.0 - c, 12.0 - c])
    return float(roots[np.abs(roots.imag) < 1e-9].real.max())


def power_beta(gamma: float, t: int) -> float:
    """β_γ(t) = (1 − 1/t)^(γ+1)   (EDM2 eq. 4): after this update, the average over the first
    t updates with weights ∝ τ^γ is β θ̂(t − 1) + (1 − β) θ(t); β(1) = 0 starts at θ(1)."""
    return (1 - 1 / t) ** (gamma + 1)


class PowerEMA(_Average):
    """The power-function EMA θ̂_γ(t) of width σ_rel, updated every step (EDM2 Appendix C.1)."""

    def __init__(self, net: nn.Module, sigma_rel: float):
        self.sigma_rel, self.gamma = sigma_rel, sigma_rel_to_gamma(sigma_rel)
        super().__init__(net)

    def update(self, net: nn.Module, step: int) -> None:
        """After optimizer step `step` (0-based), i.e. update t = step + 1."""
        _lerp_into(self.shadow, net, 1 - power_beta(self.gamma, step + 1))


def profile_inner_product(t_a: float, gamma_a: float, t_b: float, gamma_b: float) -> float:
    """∫ p_a(τ) p_b(τ) dτ of two power-function profiles p(τ) = (γ + 1) τ^γ / t^(γ+1) on
    [0, t] (EDM2 Appendix C.2): with m = min(t_a, t_b),

        (γ_a + 1)(γ_b + 1) / (γ_a + γ_b + 1) · m^(γ_a+γ_b+1) / (t_a^(γ_a+1) t_b^(γ_b+1)),

    written through the ratio of the two times so that no power of a step count overflows."""
    scale = (gamma_a + 1) * (gamma_b + 1) / (gamma_a + gamma_b + 1)
    if t_a <= t_b:
        return scale * (t_a / t_b) ** gamma_b / t_b
    return scale * (t_b / t_a) ** gamma_a / t_a


def posthoc_coefficients(snapshots: Sequence[tuple[float, float]], target: tuple[float, float]
                         ) -> np.ndarray:
    """The weights x of snapshots (t_i, γ_i) whose combination Σ x_i p_i is the least-squares
    fit, in L², of the target profile (t, γ) (EDM2 Appendix C.2): the normal equations
    A x = b with A_ij = ⟨p_i, p_j⟩ and b_i = ⟨p_i, p_target⟩, then x scaled to sum to 1 (a
    combination of averages stays an average, as in EDM2's `solve_posthoc_coefficients`)."""
    a = np.array([[profile_inner_product(*s, *u) for u in snapshots] for s in snapshots])
    b = np.array([profile_inner_product(*s, *target) for s in snapshots])
    try:
        x = np.linalg.solve(a, b)
    except np.linalg.LinAlgError:
        raise ConfigError("the snapshots' profiles are linearly dependent (the same step and "
                          "σ_rel twice?); remove the duplicates from the snapshot index") from None
    return x / x.sum()


def combine(weights: Iterable[dict[str, Tensor]], coefficients: np.ndarray
            ) -> list[dict[str, Tensor]]:
    """Σ_i X_ij θ_i for each column j of `coefficients` [snapshots, targets]: the state dicts
    `weights` (one per row, read once, in order, so they may be loaded one at a time) summed in
    float64 and returned in each tensor's own dtype; integer buffers (counters) are the last
    state dict's."""
    coefficients = np.asarray(coefficients, dtype=np.float64)
    totals: list[dict[str, Tensor]] = [{} for _ in range(coefficients.shape[1])]
    last: dict[str, Tensor] = {}
    rows = 0
    for i, w in enumerate(weights):
        for name, tensor in w.items():
            if not tensor.is_floating_point():
                continue
            value = tensor.detach().double().cpu()
            for j, total in enumerate(totals):
                total[name] = total.get(name, 0) + float(coefficients[i, j]) * value
        last, rows = w, i + 1
    if rows != coefficients.shape[0]:
        raise ValueError(f"{rows} state dicts for {coefficients.shape[0]} coefficient rows")
    return [{name: total[name].to(t.dtype) if t.is_floating_point() else t.clone()
             for name, t in last.items()} for total in totals]
