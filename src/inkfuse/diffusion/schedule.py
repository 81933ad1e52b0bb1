"""The noise schedule: one object that knows ᾱ_t and everything derived from it.

Variance-preserving diffusion with T discrete steps (Ho et al. 2020):
    q(x_t | x_0) = N(sqrt(ᾱ_t) x_0, (1 - ᾱ_t) I),     ᾱ_t = prod_{s<=t} (1 - β_s).
Index t runs 0..T-1 (step t = 0 is the first, least noisy one). Everything else — α_t, σ_t
(the EDM/Karras noise level of the same marginal, x_t / sqrt(ᾱ_t) = x_0 + σ_t ε), SNR — is a
view of ᾱ, so samplers and losses never recompute the schedule themselves.

`zero_terminal_snr` rescales any of them so that ᾱ_{T−1} = 0 exactly (Lin et al. 2024): the
last step is pure noise, as sampling assumes. There ε is unidentifiable (x_T = ε carries no
x_0), so such a schedule needs a v or x_0 target (the recipe validator says so); and its σ at
the last step is ∞, which the σ view caps (`ZERO_SNR_SIGMA_FACTOR`).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from inkfuse.config import DiffusionConfig
from inkfuse.errors import ConfigError


def _linear(T: int, beta_start: float, beta_end: float) -> Tensor:
    return torch.linspace(beta_start, beta_end, T, dtype=torch.float64)


def _cosine(T: int, s: float = 0.008) -> Tensor:
    """Nichol & Dhariwal 2021, eq. 17: ᾱ(t) = cos²((t/T + s)/(1 + s) · π/2), β clipped at 0.999."""
    f = lambda t: torch.cos((t / T + s) / (1 + s) * math.pi / 2) ** 2  # noqa: E731
    t = torch.arange(T + 1, dtype=torch.float64)
    return (1 - f(t[1:]) / f(t[:-1])).clamp(max=0.999)


def _sigmoid(T: int, start: float = -3.0, end: float = 3.0, tau: float = 1.0) -> Tensor:
    """Jabri et al. 2022 / Chen 2023: ᾱ follows a shifted, rescaled sigmoid in t/T."""
    t = torch.arange(T + 1, dtype=torch.float64) / T
    v0, v1 = torch.sigmoid(torch.tensor(start / tau)), torch.sigmoid(torch.tensor(end / tau))
    g = (-(torch.sigmoid((t * (end - start) + start) / tau)) + v1) / (v1 - v0)
    return (1 - g[1:] / g[:-1]).clamp(1e-8, 0.999)


def rescale_zero_terminal_snr(betas: Tensor) -> Tensor:
    """Lin et al. 2024, "Common Diffusion Noise Schedules and Sample Steps are Flawed",
    Algorithm 1: shift sqrt(ᾱ_t) so that its last value is 0, then scale it so that its first
    value is unchanged,

        sqrt(ᾱ'_t) = (sqrt(ᾱ_t) − sqrt(ᾱ_{T−1})) · sqrt(ᾱ_0) / (sqrt(ᾱ_0) − sqrt(ᾱ_{T−1})),

    and return the betas of the result (β'_t = 1 − ᾱ'_t / ᾱ'_{t−1}, so β'_{T−1} = 1). In float64:
    the shift cancels most digits of the last steps."""
    sqrt_ab = torch.cumprod(1 - betas.double(), 0).sqrt()
    first, last = sqrt_ab[0].item(), sqrt_ab[-1].item()
    ab = ((sqrt_ab - last) * (first / (first - last))) ** 2
    alphas = torch.cat([ab[:1], ab[1:] / ab[:-1]])
    return 1 - alphas


# The σ view of a zero-terminal-SNR schedule caps its last σ (∞) at this many times σ_{T−2}
# (and at least this: diffusers' Euler scheduler uses ᾱ = 2⁻²⁴, σ ≈ 4096). σ-space samplers then
# take a finite first step from the trailing grid's t = T−1; its part that depends on σ_{T−1}
# (σ_next / σ_{T−1} ≤ 1/4096 of the denoised image) vanishes in the exact σ = ∞ limit. The
# network itself still sees ᾱ = 0 there (integer steps read `alphas_cumprod`). Heun's step has
# no such limit: its correction weighs the change of the denoised image across the step by
# σ / σ_next, so Heun and Restart belong on their default Karras grid (σ ≤ 80), not on a
# trailing one, with this schedule.
ZERO_SNR_SIGMA_FACTOR = 4096.0


class Schedule:
    """ᾱ, α, β, σ and SNR for `T` steps of a named schedule (`linear`, `cosine`, `sigmoid`),
    rescaled to reach pure noise at its last step with `zero_terminal_snr`."""

    def __init__(
        self, kind: str = "cosine", T: int = 1000, beta_start: float = 1e-4,
        beta_end: float = 0.02, zero_terminal_snr: bool = False,
    ):
        if kind == "linear":
            betas = _linear(T, beta_start, beta_end)
        elif kind == "cosine":
            betas = _cosine(T)
        elif kind == "sigmoid":
            betas = _sigmoid(T)
        else:
            raise ConfigError(f"unknown schedule {kind!r} (use linear, cosine or sigmoid)")
        if not (betas.min() > 0 and betas.max() < 1):
            raise ConfigError(f"{kind} schedule has betas outside (0, 1): "
                              "check beta_start/beta_end")
        if zero_terminal_snr:
            if T < 2:
                raise ConfigError("zero_terminal_snr needs at least 2 steps: the first keeps "
                                  "its ᾱ, the last becomes pure noise")
            betas = rescale_zero_terminal_snr(betas)
            # only the last step may be pure noise: a β of 1 (or NaN, 0/0) earlier means ᾱ had
            # already underflowed to 0 before T−1
            if not (betas[:-1].min() > 0 and betas[:-1].max() < 1):
                raise ConfigError(f"the {kind} schedule of T = {T} steps reaches ᾱ = 0 before "
                                  "its last step, so zero_terminal_snr cannot rescale it; lower "
                                  "diffusion.timesteps or diffusion.beta_end")
        self.kind, self.T, self.zero_terminal_snr = kind, T, zero_terminal_snr
        self.betas = betas.float()
        self.alphas = (1 - betas).float()
        self.alphas_cumprod = torch.cumprod(1 - betas, 0).float()
        # σ in float64 first: near t = 0 it is small and precision matters for Karras grids.
        ab = torch.cumprod(1 - betas, 0)
        sigmas = ((1 - ab) / ab).sqrt()
        if zero_terminal_snr:  # σ_{T−1} = ∞: capped, see ZERO_SNR_SIGMA_FACTOR
            sigmas[-1] = ZERO_SNR_SIGMA_FACTOR * max(sigmas[-2].item(), 1.0)
        self.sigmas = sigmas.float()
        self.log_sigmas = self.sigmas.log()

    @classmethod
    def of(cls, dc: DiffusionConfig) -> Schedule:
        """The schedule a recipe's [diffusion] table describes: one place that reads every field
        of it, for training and for loading a run alike."""
        return cls(dc.schedule, dc.timesteps, dc.beta_start, dc.beta_end, dc.zero_terminal_snr)

    def __repr__(self) -> str:
        zero = ", zero_terminal_snr=True" if self.zero_terminal_snr else ""
        return f"Schedule({self.kind!r}, T={self.T}{zero})"

    # --- views of ᾱ at (possibly fractional) steps ------------------------------------------
    def alpha_bar(self, t: Tensor) -> Tensor:
        """ᾱ at integer steps t (exact) or fractional ones (interpolating log σ)."""
        if not t.is_floating_point():
            return self.alphas_cumprod.to(t.device)[t]
        return 1.0 / (1.0 + self.sigma(t) ** 2)

    def sigma(self, t: Tensor) -> Tensor:
        """σ_t = sqrt((1 - ᾱ_t) / ᾱ_t), interpolated in log σ between integer steps."""
        t = t.to(torch.float32).clamp(0, self.T - 1)
        lo = t.floor().long()
        hi = (lo + 1).clamp(max=self.T - 1)
        w = t - lo
        log_sigmas = self.log_sigmas.to(t.device)
        return ((1 - w) * log_sigmas[lo] + w * log_sigmas[hi]).exp()

    def sigma_to_t(self, sigma: Tensor) -> Tensor:
        """The fractional step whose σ equals `sigma` (inverse of `sigma`, for Karras grids)."""
        log_sigmas = self.log_sigmas.to(sigma.device)
        log_sigma = sigma.float().clamp(self.sigmas[0].item(), self.sigmas[-1].item()).log()
        hi = torch.searchsorted(log_sigmas, log_sigma.reshape(-1)).clamp(1, self.T - 1)
        lo = hi - 1
        w = (log_sigma.reshape(-1) - log_sigmas[lo]) / (log_sigmas[hi] - log_sigmas[lo])
        return (lo + w.clamp(0, 1)).reshape(sigma.shape)

    def snr(self, t: Tensor) -> Tensor:
        """Signal-to-noise ratio ᾱ / (1 - ᾱ) = 1 / σ²."""
        return self.sigma(t) ** -2

    # --- the forward process -------------------------------------------------------------
    def q_sample(self, x0: Tensor, t: Tensor, noise: Tensor) -> Tensor:
        """Draw x_t ~ q(x_t | x_0) in closed form: sqrt(ᾱ_t) x_0 + sqrt(1 - ᾱ_t) ε (DDPM eq. 4)."""
        ab = _expand(self.alpha_bar(t), x0)
        return ab.sqrt() * x0 + (1 - ab).sqrt() * noise


def _expand(v: Tensor, like: Tensor) -> Tensor:
    """Per-sample scalars [B] shaped to broadcast over images [B, C, H, W]."""
    return v.to(like.dtype).reshape(-1, *([1] * (like.ndim - 1)))


def timesteps(T: int, steps: int, spacing: str = "trailing") -> list[int]:
    """The descending integer steps a sampler visits.

    `leading` (DDIM paper: 0, k, 2k…, never reaching T-1), `trailing` (Lin et al. 2024, "Common
    diffusion noise schedules and sample steps are flawed": starts at T-1 so the first step sees
    pure noise), `linspace` (evenly spaced from T-1 to 0: i (T − 1) / (N − 1) rounded half to
    even, numpy's rule and so diffusers' `linspace` spacing; computed exactly in integers, since
    in floating point an exact tie such as 499.5 may land an ulp low and round the wrong way).
    The fractional `karras` grid needs the schedule, not just T: see `karras_timesteps` /
    `timestep_grid`.
    """
    if not 1 <= steps <= T:
        raise ConfigError(f"steps = {steps} must be between 1 and the model's T = {T}")
    if spacing == "leading":
        ts = [i * (T // steps) for i in range(steps)]
    elif spacing == "trailing":
        ts = [round(T - i * T / steps) - 1 for i in range(steps)]
    elif spacing == "linspace":
        ts = [_round_half_even(i * (T - 1), max(steps - 1, 1)) for i in range(steps)]
    elif spacing == "karras":
        raise ConfigError("karras spacing needs the schedule: use karras_timesteps(schedule, "
                          "steps) or timestep_grid(schedule, steps, 'karras')")
    else:
        raise ConfigError(f"unknown timestep spacing {spacing!r} "
                          f"(use {', '.join(SPACINGS)})")
    return sorted(set(ts), reverse=True)


def _round_half_even(num: int, den: int) -> int:
    """num / den (den > 0) rounded to the nearest integer, ties to the even one: exact."""
    q, r = divmod(num, den)
    return q + int(2 * r > den or (2 * r == den and q % 2 == 1))


def karras_timesteps(schedule: Schedule, steps: int, rho: float = 7.0, *,
                     sigma_min: float | None = None, sigma_max: float | None = None) -> Tensor:
    """Karras et al. 2022 (EDM) eq. 5 as descending fractional steps of `schedule`.

        σ_i = (σ_max^(1/ρ) + i/(N−1) (σ_min^(1/ρ) − σ_max^(1/ρ)))^ρ,   i = 0..N−1,

    by default between the schedule's own σ_max = σ_{T−1} and σ_min = σ_0, mapped back to steps
    with `sigma_to_t` (so the first step is T−1 and the last 0). ρ = 7 spends most steps at low
    noise; ρ = 1 is uniform in σ, ρ → ∞ uniform in log σ. Samplers append σ = 0 themselves.
    `sigma_min`/`sigma_max` narrow the range (EDM uses σ_max = 80; the cosine schedule's last step
    jumps to σ ≈ 2·10⁴, which Euler/Heun, unlike DPM-Solver++/UniPC, take poorly in few steps);
    they are clamped to the schedule's range, which a network trained on T steps has seen.
    """
    if steps < 1:
        raise ConfigError(f"steps = {steps} must be at least 1")
    s_min, s_max = schedule.sigmas[0].item(), schedule.sigmas[-1].item()
    lo = min(max(sigma_min if sigma_min is not None else s_min, s_min), s_max)
    hi = min(max(sigma_max if sigma_max is not None else s_max, lo), s_max)
    if steps == 1:
        return schedule.sigma_to_t(torch.tensor([hi], dtype=torch.float64)).float()
    ramp = torch.linspace(0, 1, steps, dtype=torch.float64)
    sigmas = (hi ** (1 / rho) + ramp * (lo ** (1 / rho) - hi ** (1 / rho))) ** rho
    ts = schedule.sigma_to_t(sigmas).float()
    if hi == s_max:  # exact ends: float rounding of (σ^(1/ρ))^ρ would nudge T−1 to 998.9999
        ts[0] = schedule.T - 1
    if lo == s_min:
        ts[-1] = 0
    return ts


SPACINGS = ("leading", "trailing", "linspace", "karras")
# EDM's σ_max. VP schedules end far higher (cosine: σ ≈ 2·10⁴), and a Karras grid spanning that
# spends its first steps on noise levels where x_0 is invisible anyway, and gives Euler/Heun a
# first step across a huge σ ratio, which they take poorly.
KARRAS_SIGMA_MAX = 80.0


def timestep_grid(schedule: Schedule, steps: int, spacing: str = "trailing") -> Tensor:
    """The descending steps a sampler visits as a tensor: `timesteps` (integers) for `leading`,
    `trailing`, `linspace`, or `karras_timesteps` (fractional) for `karras`."""
    if spacing == "karras":
        return karras_timesteps(schedule, steps, sigma_max=KARRAS_SIGMA_MAX)
    return torch.tensor(timesteps(schedule.T, steps, spacing))
