"""Likelihood in bits per dimension, two ways: the variational bound and the probability-flow ODE.

**The variational bound** (Ho et al. 2020, eq. 5) of one image x_0, with this package's step
indices (step 0 is the first, least noisy one; Ho et al.'s t = 1..T is our 0..T−1):

    −log p(x_0) ≤ L_prior + Σ_{k=1}^{T−1} L_k + L_dec
    L_prior = KL(q(x_{T−1} | x_0) ‖ N(0, I))                       closed form
    L_k     = E_q KL(q(x_{k−1} | x_k, x_0) ‖ p(x_{k−1} | x_k))     two Gaussians
    L_dec   = E_q −log p(x_0 | x at step 0)                        the decoder

p(x_{k−1} | x_k) = N(μ̃(x_k, x̂_0), σ_k² I) is the reverse step of the `ddpm` sampler, with the
network's x̂_0 in the posterior mean and a fixed variance: the posterior's β̃_k (default, what
`ddpm` draws with) or β_k, the two choices of Ho et al. §3.2. For 8-bit pixels the decoder is
their discretised Gaussian (eq. 13: data in [-1, 1], 256 bins of width 2/255, the outer bins
reaching ±∞); for latents, whose values are continuous, it is the Gaussian density itself.
The T − 1 KL terms are one sum estimated by importance sampling: a pilot pass measures each
step's loss on a grid of steps, the proposal is p(k) ∝ sqrt(E[L_k²]) (Nichol & Dhariwal 2021,
§3.3, the optimal proposal's usual stand-in) mixed with 10% uniform so that no weight exceeds
10 (T − 1), and every image gets `t_samples` steps stratified in the proposal's CDF: an
unbiased estimate of its own bound, whatever the proposal.

**The probability-flow ODE** (Song et al. 2021, §4.3 and appendix D.2). In the EDM scale
x_σ = x_t / sqrt(ᾱ_t) = x_0 + σ ε the ODE of the VP process is dx/dσ = ε̂(x, σ); in λ = log σ

    dx/dλ = σ ε̂(x, σ) = x − x̂_0(x, σ),     d log p(x(λ)) / dλ = −div f,

integrated with fixed steps (RK4 or Heun) from the schedule's σ_0 to σ_{T−1}, where
p ≈ N(0, (1 + σ²) I). The divergence is Hutchinson's estimate vᵀ J v with one Rademacher v
per image, held for the whole path (so its integral is an unbiased trace of ∫J). Pixels are
dequantised uniformly inside the same 2/255 bins as the decoder's, so both estimators bound the
same discrete probability: −log₂ P(x) ≤ E_u[−log₂ p(u)] + D log₂(255 / 2) (Jensen), which
puts the ODE's number in the 8-bit convention the bound reports.

Both score the model as the samplers' `Denoiser` runs it: for pixel runs x̂_0 is clipped to
[-1, 1] in the reverse step's mean and in the ODE's field alike, as Nichol & Dhariwal's bpd
does. Unclipped, an ε-network's error at the last steps is multiplied by 1/sqrt(ᾱ) (2·10⁴ at
the cosine schedule's last step, where β is clipped at 0.999) and swamps both numbers:
measured on MNIST after 46 training steps, the bound 3.6 bits/dim clipped against 32 unclipped
(23 of them from the last step alone), the ODE 3.3 against 5.9. For a latent diffusion run
(never clipped) both are bits per dimension of its scaled VAE latents, a continuous density (it
can be negative), not a bound on the pixels.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, replace
from typing import Any, Protocol

import numpy as np
import torch
from torch import Tensor
from tqdm import tqdm

from inkfuse.artifacts.run import Run
from inkfuse.config import DataConfig
from inkfuse.data import ImageDataset, build_dataset
from inkfuse.diffusion import Condition, Denoiser, Prediction, Schedule
from inkfuse.diffusion.denoiser import step_variance
from inkfuse.diffusion.gaussian import (
    HALF_BIN,
    discretized_gaussian_nll,
    gaussian_nll,
    normal_kl,
)
from inkfuse.errors import ConfigError, DataError
from inkfuse.metrics.fid import SHAPES_REFERENCE_SEED

ESTIMATORS = ("vlb", "ode")
VARIANCES = ("posterior", "beta")
SOLVERS = ("rk4", "heun")
# −log₂ of the bin volume per dimension, which turns a dequantised density into bits of the
# 8-bit data: log₂(255 / 2)
DEQUANT_BITS = math.log2(1 / (2 * HALF_BIN))
UNIFORM_SHARE = 0.1  # of the importance proposal: bounds every weight by 10 (T − 1)
PILOT_STEPS = 48  # steps on the pilot grid (all of them when T − 1 is smaller)
PILOT_IMAGES = 32  # test images the pilot pass measures them on

class DenoiserFn(Protocol):
    """A `Denoiser` (or guidance around one): a prediction, and the schedule it predicts on."""

    schedule: Schedule

    def __call__(self, x: Tensor, t: Tensor, cond: Condition | None = None) -> Prediction: ...


# --- the terms, each a closed form ----------------------------------------------------------

def prior_kl(x0: Tensor, schedule: Schedule) -> Tensor:
    """L_prior = KL(q(x_{T−1} | x_0) ‖ N(0, I)) of each image [B], in nats: with ᾱ = ᾱ_{T−1},
    q = N(sqrt(ᾱ) x_0, (1 − ᾱ) I), so per element 0.5 (ᾱ x_0² − ᾱ − log(1 − ᾱ))."""
    ab = schedule.alphas_cumprod[-1].double()
    x = x0.double().flatten(1)
    return 0.5 * (ab * x.pow(2) - ab - torch.log1p(-ab)).sum(1)


def reverse_variances(schedule: Schedule, variance: str = "posterior") -> Tensor:
    """σ_k² of p(x_{k−1} | x_k) for k = 1..T−1 at index k, and the decoder's at index 0
    (float64 [T]), all from ᾱ so they stay consistent with it.

    posterior: β̃_k = β_k (1 − ᾱ_{k−1}) / (1 − ᾱ_k), right when x_0 is one point; the decoder
    takes β̃_1 (β̃_0 is 0), as Ho et al.'s and Nichol & Dhariwal's code do.
    beta: β_k, right when x_0 ~ N(0, I) (continuous, smooth data); the decoder takes β_0, the
    variance of x at step 0 given x_0."""
    if variance not in VARIANCES:
        raise ConfigError(f"unknown reverse variance {variance!r} (use {', '.join(VARIANCES)})")
    if schedule.T < 2:
        raise ConfigError("the variational bound needs a schedule of at least 2 steps")
    ab = schedule.alphas_cumprod.double()
    prev = torch.cat([ab.new_ones(1), ab[:-1]])
    beta = 1 - ab / prev
    if variance == "beta":
        return beta
    tilde = beta * (1 - prev) / (1 - ab)
    return torch.cat([tilde[1:2], tilde[1:]])


def _per_sample(values: Tensor, k: Tensor, like: Tensor) -> Tensor:
    """values[k] [B] shaped to broadcast over `like` [B, ...], in like's dtype."""
    return values.to(like.device)[k].to(like.dtype).reshape(-1, *[1] * (like.ndim - 1))


def vlb_terms(denoiser: DenoiserFn, x0: Tensor, k: Tensor, cond: Condition | None,
              variances: Tensor, *, discrete: bool,
              generator: torch.Generator | None = None) -> Tensor:
    """One draw of L_k for each image at its own step k [B] (long), in nats per image [B]:
    the decoder's −log p(x_0 | x at step 0) where k = 0, the KL of the reverse step elsewhere.

    x_k = sqrt(ᾱ_k) x_0 + sqrt(1 − ᾱ_k) ε; the posterior q(x_{k−1} | x_k, x_0) has mean
    c_0 x_0 + c_k x_k with c_0 = sqrt(ᾱ_{k−1}) β_k / (1 − ᾱ_k) and c_k = sqrt(α_k)
    (1 − ᾱ_{k−1}) / (1 − ᾱ_k) and variance β̃_k (DDPM eq. 7); the model's mean puts x̂_0 for
    x_0, so only c_0 (x_0 − x̂_0) separates the two means. At k = 0, c_0 = 1 and c_k = 0:
    the decoder's mean is x̂_0 itself."""
    schedule = denoiser.schedule
    ab = schedule.alphas_cumprod.double()
    prev = torch.cat([ab.new_ones(1), ab[:-1]])
    eps = torch.randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
    x_k = schedule.q_sample(x0, k, eps)
    pred = denoiser(x_k, k, cond)
    x0_hat = pred.x0.to(torch.float64)
    x = x0.to(torch.float64)
    var = _per_sample(variances, k, x)
    if pred.var_frac is not None:  # a learned variance replaces the fixed one (L_hybrid runs)
        var = step_variance(_per_sample(ab, k, x), _per_sample(prev, k, x),
                            pred.var_frac.to(torch.float64))
    decoder = (discretized_gaussian_nll(x, x0_hat, var.sqrt()) if discrete
               else gaussian_nll(x, x0_hat, var))
    beta = 1 - ab / prev
    c0 = _per_sample(prev.sqrt() * beta / (1 - ab), k, x)
    post_var = _per_sample(beta * (1 - prev) / (1 - ab), k, x)
    # at k = 0 the posterior is a point (β̃_0 = 0): keep its row finite, it is not used
    post_var = torch.where(post_var > 0, post_var, var)
    kl = normal_kl(c0 * x, post_var, c0 * x0_hat, var)
    is_decoder = (k == 0).reshape(-1, *[1] * (x.ndim - 1))
    out = torch.where(is_decoder, decoder, kl).flatten(1).sum(1)
    if not torch.isfinite(out).all():
        raise DataError("the variational bound is not finite: the model predicts NaN or "
                        "infinite values at some step (a damaged run, or ε-prediction at "
                        "ᾱ = 0): check the run, or use --bpd-estimator ode")
    return out


def pilot_grid(T: int, points: int = PILOT_STEPS) -> Tensor:
    """The steps 1..T−1 of the pilot pass: geometric from 1 (where the terms change fastest)
    joined with linear ones, or every step when there are fewer than `points`."""
    if points >= T - 1:
        return torch.arange(1, T)
    geo = np.geomspace(1, T - 1, points // 2)
    lin = np.linspace(1, T - 1, points - points // 2)
    return torch.from_numpy(np.unique(np.round(np.concatenate([geo, lin])).astype(np.int64)))


def vlb_proposal(denoiser: DenoiserFn, x0: Tensor, cond: Condition | None, variances: Tensor,
                 *, discrete: bool, generator: torch.Generator | None = None,
                 points: int = PILOT_STEPS) -> Tensor:
    """Importance weights over k = 1..T−1 (float64 [T − 1], summing to 1) from a pilot batch:
    sqrt(mean L_k²) at the `pilot_grid` steps, interpolated linearly between them, mixed with
    UNIFORM_SHARE of the uniform distribution."""
    T = denoiser.schedule.T
    grid = pilot_grid(T, points)
    rms = []
    for k in grid.tolist():
        ks = torch.full((x0.shape[0],), k, dtype=torch.long, device=x0.device)
        loss = vlb_terms(denoiser, x0, ks, cond, variances, discrete=discrete,
                         generator=generator)
        rms.append(loss.pow(2).mean().sqrt().item())
    r = np.interp(np.arange(1, T), grid.numpy(), np.asarray(rms))
    r = torch.from_numpy(r)
    shaped = r / r.sum() if r.sum() > 0 else torch.full_like(r, 1 / (T - 1))
    return (1 - UNIFORM_SHARE) * shaped + UNIFORM_SHARE / (T - 1)


def stratified_steps(proposal: Tensor, batch: int, strata: int,
                     generator: torch.Generator | None = None) -> Tensor:
    """Steps [strata, batch] in 1..T−1: row j draws u ~ U[j/K, (j+1)/K) and takes the
    proposal's inverse CDF, so that the K draws of one image cover the proposal evenly while
    each keeps the marginal that makes Σ_j L_{k_j} / (K p(k_j)) unbiased."""
    device = generator.device if generator is not None else proposal.device
    u = (torch.arange(strata, dtype=torch.float64, device=device)[:, None]
         + torch.rand(strata, batch, generator=generator, dtype=torch.float64,
                      device=device)) / strata
    cdf = torch.cumsum(proposal.to(device), 0)
    idx = torch.searchsorted(cdf, u.reshape(-1) * cdf[-1], right=True)
    return idx.clamp(max=len(proposal) - 1).reshape(strata, batch) + 1


@dataclass
class Bound:
    """The variational bound of each image [B] in nats, and its three parts."""

    prior: Tensor
    decoder: Tensor
    diffusion: Tensor

    @property
    def total(self) -> Tensor:
        return self.prior + self.decoder + self.diffusion


def vlb_nll(denoiser: DenoiserFn, x0: Tensor, cond: Condition | None, proposal: Tensor,
            variances: Tensor, *, discrete: bool, t_samples: int = 8,
            generator: torch.Generator | None = None) -> Bound:
    """An unbiased estimate of each image's variational bound (module doc), in nats: the prior
    term exactly, the decoder from one noise draw, the KL sum from `t_samples` importance
    samples of k (`stratified_steps` of `proposal`, from `vlb_proposal`)."""
    if t_samples < 1:
        raise ConfigError(f"t_samples = {t_samples} must be at least 1")
    b = x0.shape[0]
    zero = torch.zeros(b, dtype=torch.long, device=x0.device)
    decoder = vlb_terms(denoiser, x0, zero, cond, variances, discrete=discrete,
                        generator=generator)
    steps = stratified_steps(proposal, b, t_samples, generator).to(x0.device)
    diffusion = torch.zeros(b, dtype=torch.float64, device=x0.device)
    for ks in steps:
        loss = vlb_terms(denoiser, x0, ks, cond, variances, discrete=discrete,
                         generator=generator)
        diffusion += loss / (t_samples * proposal.to(x0.device)[ks - 1])
    return Bound(prior_kl(x0, denoiser.schedule).to(x0.device), decoder, diffusion)


# --- the probability-flow ODE ---------------------------------------------------------------

def ode_sigmas(schedule: Schedule) -> tuple[float, float]:
    """(σ_min, σ_max) of the ODE: the schedule's first σ and its largest finite one (a
    zero-terminal-SNR schedule's last σ is infinite: its prior then stands one step short)."""
    sigmas = schedule.sigmas.double()
    finite = sigmas[torch.isfinite(sigmas)]
    return float(finite[0]), float(finite.max())


def rademacher(shape: tuple[int, ...], generator: torch.Generator | None = None,
               device: torch.device | str = "cpu") -> Tensor:
    """Independent ±1 entries: Hutchinson's probe with the least variance (Hutchinson 1990)."""
    bits = torch.randint(0, 2, shape, generator=generator, device=device)
    return bits.float() * 2 - 1


def _field(denoiser: DenoiserFn, x: Tensor, lam: float, cond: Condition | None,
           probe: Tensor) -> tuple[Tensor, Tensor]:
    """(f, vᵀ ∂f/∂x v) at x [B, ...] in the σ scale, λ = log σ: f = σ ε̂ (= x − x̂_0, formed from
    ε̂ so that no large σ x cancels against x), the estimate per image [B] in float64."""
    sigma = math.exp(lam)
    schedule = denoiser.schedule
    t = schedule.sigma_to_t(torch.tensor([sigma], device=x.device)).expand(x.shape[0])
    with torch.enable_grad():
        x = x.detach().requires_grad_(True)
        pred = denoiser(x / math.sqrt(1 + sigma**2), t, cond)
        f = sigma * pred.eps.float()
        (grad,) = torch.autograd.grad((f * probe).sum(), x)
    return f.detach(), (grad * probe).flatten(1).sum(1).double()


def ode_nll(denoiser: DenoiserFn, x: Tensor, cond: Condition | None, *, steps: int = 32,
            solver: str = "rk4", generator: torch.Generator | None = None) -> Tensor:
    """−log p(x) of each point [B] in nats under the model's probability-flow ODE (module doc):
    `steps` fixed steps of `solver` in λ = log σ from σ_min (where x is the data) to σ_max,
    whose density is N(0, (1 + σ_max²) I); 4 (rk4) or 2 (heun) network calls and backward
    passes per step."""
    if solver not in SOLVERS:
        raise ConfigError(f"unknown ODE solver {solver!r} (use {', '.join(SOLVERS)})")
    if steps < 1:
        raise ConfigError(f"the ODE needs at least 1 step, got {steps}")
    s_min, s_max = ode_sigmas(denoiser.schedule)
    lams = np.linspace(math.log(s_min), math.log(s_max), steps + 1)
    probe = rademacher(tuple(x.shape), generator, x.device)
    x = x.float()
    delta = torch.zeros(x.shape[0], dtype=torch.float64, device=x.device)  # ∫ div f dλ
    for lam, nxt in itertools.pairwise(lams.tolist()):
        h = float(nxt - lam)
        if solver == "heun":
            f1, d1 = _field(denoiser, x, lam, cond, probe)
            f2, d2 = _field(denoiser, x + h * f1, nxt, cond, probe)
            x = x + h / 2 * (f1 + f2)
            delta += h / 2 * (d1 + d2)
        else:
            mid = lam + h / 2
            f1, d1 = _field(denoiser, x, lam, cond, probe)
            f2, d2 = _field(denoiser, x + h / 2 * f1, mid, cond, probe)
            f3, d3 = _field(denoiser, x + h / 2 * f2, mid, cond, probe)
            f4, d4 = _field(denoiser, x + h * f3, nxt, cond, probe)
            x = x + h / 6 * (f1 + 2 * f2 + 2 * f3 + f4)
            delta += h / 6 * (d1 + 2 * d2 + 2 * d3 + d4)
    var = 1 + s_max**2
    flat = x.double().flatten(1)
    log_prior = -0.5 * (flat.pow(2).sum(1) / var + flat.shape[1] * math.log(2 * math.pi * var))
    out = -(log_prior + delta)
    if not torch.isfinite(out).all():
        raise DataError("the ODE likelihood is not finite: the model predicts NaN or infinite "
                        "values along the path: check the run, or use --bpd-estimator vlb")
    return out


def dequantize(x0: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """8-bit pixels in [-1, 1] spread uniformly over their bins [x − 1/255, x + 1/255)."""
    u = torch.rand(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
    return x0 + (2 * u - 1) * HALF_BIN


def bits_per_dim(nll: Tensor, dims: int, dequantized: bool = False) -> Tensor:
    """Nats per image -> bits per dimension; a dequantised density gets the bins' log₂(255/2)
    per dimension, which makes it a bound on the 8-bit data's −log₂ P."""
    return nll / (dims * math.log(2)) + (DEQUANT_BITS if dequantized else 0.0)


def mean_and_sem(values: Tensor) -> tuple[float, float]:
    """The mean of per-image values and its standard error (nan for a single image)."""
    v = values.double()
    if len(v) < 2:
        return float(v.mean()), math.nan
    return float(v.mean()), float(v.std() / math.sqrt(len(v)))


# --- a run's held-out images ----------------------------------------------------------------

def test_split(data: DataConfig, n: int) -> ImageDataset:
    """The first `n` held-out images of `data`'s dataset, unaugmented: its test split, or for
    shapes n scenes of the seed FID's reference uses (training draws from train.seed)."""
    test = replace(data, split="test", hflip=False, crop_padding=0)
    shapes = test.name == "shapes"
    test = replace(test, count=n) if shapes else replace(test, limit=n)
    return build_dataset(test, seed=SHAPES_REFERENCE_SEED if shapes else 0)


def held_out(run: Run, n: int) -> tuple[Tensor, Condition | None]:
    """The first `n` test images of the run's dataset (`test_split`) as uint8 [n, C, H, W],
    and their condition: each image's own class, context or caption (a likelihood of x given
    what the model was trained to read), None for an unconditional run. A model conditioned on
    CLIP image embeddings, or on a low-res image, has no condition to read from a test image
    here, and is refused."""
    cfg = run.config
    if cfg.data.low_res:
        raise ConfigError("bpd of a super-resolution model is not supported: score its base "
                          "model instead")
    if cfg.data.labels == "clip-image":
        raise ConfigError("bpd of a model conditioned on CLIP image embeddings is not "
                          "supported: it would need every test image's embedding")
    data = test_split(cfg.data, n)
    images = data.images[:n]
    if not run.conditional:
        return images, None
    if run.text is not None:
        if not data.captions:
            raise DataError(f"the test split of {cfg.data.name} has no captions for the text "
                            "model: score it on a dataset with captions (shapes)")
        return images, run.text.encode(data.captions[:n]).to("cpu")
    if data.context is not None:
        return images, Condition.from_vectors(data.context[:n])
    return images, Condition.from_labels(data.labels[:n], cfg.model.cond_dim)


def check_options(estimators: tuple[str, ...], *, t_samples: int, ode_steps: int,
                  solver: str, variance: str) -> None:
    """Refuse unknown estimators, solvers or variances and counts below 1, before any work."""
    unknown = [e for e in estimators if e not in ESTIMATORS]
    if unknown or not estimators:
        raise ConfigError(f"unknown bpd estimator {unknown[0] if unknown else ''!r} "
                          f"(use {', '.join(ESTIMATORS)} or both)")
    if solver not in SOLVERS:
        raise ConfigError(f"unknown ODE solver {solver!r} (use {', '.join(SOLVERS)})")
    if variance not in VARIANCES:
        raise ConfigError(f"unknown reverse variance {variance!r} (use {', '.join(VARIANCES)})")
    for flag, value in (("--bpd-t-samples", t_samples), ("--bpd-ode-steps", ode_steps)):
        if not isinstance(value, int) or value < 1:
            raise ConfigError(f"{flag} must be a positive integer, got {value!r}")


def run_bpd(run: Run, n: int = 1000, *, estimators: tuple[str, ...] = ESTIMATORS, seed: int = 0,
            batch_size: int = 256, t_samples: int = 8, ode_steps: int = 32,
            solver: str = "rk4", variance: str = "posterior", progress: bool = True
            ) -> dict[str, Any]:
    """Bits per dimension of `run` on `n` held-out images (`held_out`), by the `estimators`
    asked, each as its mean and standard error over the images:

        {"bpd_vlb", "bpd_vlb_se", "bpd_vlb_prior", "bpd_vlb_decoder", "bpd_vlb_diffusion",
         "bpd_ode", "bpd_ode_se", "bpd_space", "bpd_n", ...settings}

    A latent run is scored on its test images' scaled posterior-mean latents: the numbers are
    bits per latent dimension (`bpd_space` says which). The network runs in float32 whatever
    the run trained in: the ODE's divergence is a difference of nearby outputs."""
    check_options(estimators, t_samples=t_samples, ode_steps=ode_steps, solver=solver,
                  variance=variance)
    if n < 2:
        raise ConfigError(f"bpd needs --n >= 2 test images for a standard error, got {n}")
    if batch_size < 1:
        raise ConfigError(f"--batch-size must be a positive integer, got {batch_size}")
    variances = reverse_variances(run.schedule, variance)
    images, cond = held_out(run, n)
    n = len(images)
    if n < 2:
        raise DataError(f"the test split of {run.config.data.name} has fewer than 2 images")
    device = run.device
    # the conditional model itself (guidance 1), x̂_0 clipped to [-1, 1] for pixels as the
    # samplers' Denoiser has it, and no thresholding, which would make p depend on the batch
    denoiser = Denoiser(run.net, run.schedule, run.config.diffusion.target,
                        clip=None if run.latent is not None else 1.0, null=run.null,
                        learn_variance=run.config.diffusion.learn_variance)
    discrete = run.latent is None

    def points(lo: int, hi: int) -> tuple[Tensor, Condition | None]:
        x = images[lo:hi].to(device).float() / 127.5 - 1
        if run.latent is not None:
            x = run.latent.encode(x)
        return x, None if cond is None else cond[lo:hi].to(device)

    gen = torch.Generator(device).manual_seed(seed)
    first, _ = points(0, 1)
    dims = first[0].numel()
    results: dict[str, Any] = {
        "bpd_n": n,
        "bpd_space": ("pixels " if discrete else "latents ")
        + "x".join(map(str, first.shape[1:])),
    }
    batches = [(lo, min(n, lo + batch_size)) for lo in range(0, n, batch_size)]
    with torch.no_grad():
        if "vlb" in estimators:
            x, c = points(0, min(n, PILOT_IMAGES))
            proposal = vlb_proposal(denoiser, x, c, variances, discrete=discrete, generator=gen)
            parts = []
            for lo, hi in tqdm(batches, desc="bpd vlb", disable=None if progress else True):
                x, c = points(lo, hi)
                parts.append(vlb_nll(denoiser, x, c, proposal, variances, discrete=discrete,
                                     t_samples=t_samples, generator=gen))
            bound = Bound(*(torch.cat([getattr(p, f) for p in parts]).cpu()
                            for f in ("prior", "decoder", "diffusion")))
            results["bpd_vlb"], results["bpd_vlb_se"] = mean_and_sem(
                bits_per_dim(bound.total, dims))
            for part in ("prior", "decoder", "diffusion"):
                results[f"bpd_vlb_{part}"] = float(bits_per_dim(getattr(bound, part), dims).mean())
            results |= {"bpd_t_samples": t_samples, "bpd_variance": variance}
        if "ode" in estimators:
            nll = []
            for lo, hi in tqdm(batches, desc="bpd ode", disable=None if progress else True):
                x, c = points(lo, hi)
                if discrete:
                    x = dequantize(x, gen)
                nll.append(ode_nll(denoiser, x, c, steps=ode_steps, solver=solver,
                                   generator=gen).cpu())
            results["bpd_ode"], results["bpd_ode_se"] = mean_and_sem(
                bits_per_dim(torch.cat(nll), dims, dequantized=discrete))
            results |= {"bpd_ode_steps": ode_steps, "bpd_solver": solver}
    return results


__all__ = [
    "ESTIMATORS", "Bound", "bits_per_dim", "check_options", "dequantize",
    "discretized_gaussian_nll", "gaussian_nll", "held_out", "mean_and_sem", "normal_kl",
    "ode_nll", "prior_kl", "reverse_variances", "run_bpd", "test_split", "vlb_nll",
    "vlb_proposal", "vlb_terms",
]
