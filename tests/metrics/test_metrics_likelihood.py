"""The likelihood estimators against closed forms.

Each term against a hand computation or torch.distributions; then both estimators on data whose
density is known exactly, with the exact denoiser of that data standing in for a network:
Gaussian x_0 ~ N(μ, Σ) (E[x_0 | x_t] is linear), 8-bit levels drawn uniformly (E[x_0 | x_t] is
a softmax over the 256 levels), and those levels dequantised (E[x_0 | x_σ] is a truncated
normal's mean). Each estimate must reach the exact value within 4 of its standard errors.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch.distributions import Normal, kl_divergence

from inkfuse.diffusion import Prediction, Schedule
from inkfuse.diffusion.denoiser import coefficients
from inkfuse.errors import ConfigError
from inkfuse.metrics import likelihood as L

pytestmark = pytest.mark.usefixtures("one_thread")

LINEAR = Schedule("linear", 1000)
MU = torch.tensor([0.5, -0.25, 0.0, 1.0], dtype=torch.float64)
LEVELS = torch.arange(256, dtype=torch.float64) / 127.5 - 1
LO, HI = -1 - 1 / 255, 1 + 1 / 255  # the dequantised 8-bit range


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


class Gaussian:
    """Exact denoiser of x_0 ~ N(μ, Σ): with x_t = a x_0 + b ε and Σ = Q diag(λ) Qᵀ,
    E[x_0 | x_t] = μ + Q diag(a λ / (a² λ + b²)) Qᵀ (x_t − a μ)."""

    def __init__(self, schedule: Schedule, cov: torch.Tensor):
        self.schedule, self.cov = schedule, cov
        self.lam, self.q = torch.linalg.eigh(cov)

    def __call__(self, x, t, cond=None):
        a, b = (c.double() for c in coefficients(self.schedule, t, x))
        y = (x.double() - a * MU) @ self.q
        x0 = MU + (y * a * self.lam / (a**2 * self.lam + b**2)) @ self.q.T
        return Prediction(x0.float(), ((x.double() - a * x0) / b).float())


class Levels:
    """Exact denoiser of iid uniform 8-bit levels: a softmax over the 256 levels per element."""

    def __init__(self, schedule: Schedule):
        self.schedule = schedule

    def __call__(self, x, t, cond=None):
        a, b = (c.double() for c in coefficients(self.schedule, t, x))
        logits = -(x.double()[..., None] - a[..., None] * LEVELS) ** 2 / (2 * b[..., None] ** 2)
        x0 = (logits.softmax(-1) * LEVELS).sum(-1)
        return Prediction(x0.float(), ((x.double() - a * x0) / b).float())


class Dequantised:
    """Exact denoiser of x_0 ~ U[LO, HI]: in the σ scale x_σ = x_0 + σ ε, E[x_0 | x_σ] is the
    mean of N(x_σ, σ²) truncated to [LO, HI]."""

    def __init__(self, schedule: Schedule):
        self.schedule = schedule

    def __call__(self, x, t, cond=None):
        a, b = (c.double() for c in coefficients(self.schedule, t, x))
        sigma, xs = b / a, x.double() / a
        lo, hi = (LO - xs) / sigma, (HI - xs) / sigma
        pdf = lambda z: torch.exp(-z**2 / 2) / math.sqrt(2 * math.pi)  # noqa: E731
        mass = torch.special.ndtr(hi) - torch.special.ndtr(lo)
        x0 = xs + sigma * (pdf(lo) - pdf(hi)) / mass
        return Prediction(x0.float(), ((x.double() - a * x0) / b).float())


def within(estimate: torch.Tensor, exact: torch.Tensor, slack: float = 0.0) -> None:
    """The paired error per point has a mean within 4 standard errors (+ a known bias)."""
    mean, se = L.mean_and_sem(estimate.double() - exact.double())
    assert abs(mean) < 4 * se + slack, (mean, se)


# --- the terms ----------------------------------------------------------------------------------

def test_normal_kl_and_gaussian_nll_match_torch():
    m1, v1 = torch.tensor([0.3, -1.0, 2.0]), torch.tensor([0.5, 2.0, 1e-3])
    m2, v2 = torch.tensor([0.0, 0.5, 2.1]), torch.tensor([1.0, 0.1, 2e-3])
    want = kl_divergence(Normal(m1, v1.sqrt()), Normal(m2, v2.sqrt()))
    assert torch.allclose(L.normal_kl(m1, v1, m2, v2), want, atol=1e-6)
    assert torch.allclose(L.gaussian_nll(m1, m2, v2), -Normal(m2, v2.sqrt()).log_prob(m1),
                          atol=1e-5)


def _phi(z: float) -> float:
    return 0.5 * (1 + math.erf(z / math.sqrt(2)))


def test_discretized_gaussian_nll_by_hand():
    h = 1 / 255
    x = torch.tensor([-1.0, 1.0, LEVELS[100].item(), LEVELS[200].item()], dtype=torch.float64)
    mean = torch.tensor([-0.99, 0.97, -0.2, 0.5], dtype=torch.float64)
    std = torch.tensor([0.01, 0.02, 0.01, 0.3], dtype=torch.float64)
    got = L.discretized_gaussian_nll(x, mean, std)
    m, s = mean.tolist(), std.tolist()
    want = [
        -math.log(_phi((-1 + h - m[0]) / s[0])),  # the lowest bin reaches −∞
        -math.log(1 - _phi((1 - h - m[1]) / s[1])),  # the highest reaches +∞
        -math.log(_phi((x[2] + h - m[2]) / s[2]) - _phi((x[2] - h - m[2]) / s[2])),
        -math.log(_phi((x[3] + h - m[3]) / s[3]) - _phi((x[3] - h - m[3]) / s[3])),
    ]
    assert torch.allclose(got, torch.tensor(want, dtype=torch.float64), rtol=1e-9)


def test_discretized_gaussian_nll_keeps_far_tails_and_sums_to_one():
    # a bin 12 σ above the mean: P = (erfc(a/√2) − erfc(b/√2)) / 2 ≈ 1e-33, far below the
    # 1e-12 floor of Ho et al.'s approximation
    x, mean, std = LEVELS[150].item(), LEVELS[150].item() - 12 * 0.01, 0.01
    a, b = (x - 1 / 255 - mean) / std, (x + 1 / 255 - mean) / std
    p = 0.5 * (math.erfc(a / math.sqrt(2)) - math.erfc(b / math.sqrt(2)))
    got = L.discretized_gaussian_nll(torch.tensor([x], dtype=torch.float64),
                                     torch.tensor([mean], dtype=torch.float64),
                                     torch.tensor([std], dtype=torch.float64))
    assert got.item() == pytest.approx(-math.log(p), rel=1e-9)
    # the 256 bins partition the line: their probabilities sum to 1 for any mean and std
    for m, s in [(0.0, 0.5), (0.93, 0.004), (-3.0, 1.0)]:
        nll = L.discretized_gaussian_nll(LEVELS, torch.full_like(LEVELS, m),
                                         torch.full_like(LEVELS, s))
        assert torch.exp(-nll).sum().item() == pytest.approx(1.0, abs=1e-12)


def test_prior_kl_closed_form():
    x0 = torch.randn(3, 2, 4, 4, generator=gen())
    for schedule in (LINEAR, Schedule("cosine", 50)):
        ab = schedule.alphas_cumprod[-1].double()
        want = kl_divergence(Normal(ab.sqrt() * x0.double(), (1 - ab).sqrt()),
                             Normal(0.0, 1.0)).flatten(1).sum(1)
        assert torch.allclose(L.prior_kl(x0, schedule), want, rtol=1e-9, atol=1e-15)


def test_reverse_variances_by_hand():
    s = Schedule("linear", 3, 0.1, 0.3)  # β = 0.1, 0.2, 0.3
    ab = [0.9, 0.9 * 0.8, 0.9 * 0.8 * 0.7]
    tilde = [0.2 * (1 - ab[0]) / (1 - ab[1]), 0.3 * (1 - ab[1]) / (1 - ab[2])]
    post = L.reverse_variances(s, "posterior")
    assert torch.allclose(post, torch.tensor([tilde[0], *tilde], dtype=torch.float64),
                          rtol=1e-6)
    assert torch.allclose(L.reverse_variances(s, "beta"),
                          torch.tensor([0.1, 0.2, 0.3], dtype=torch.float64), rtol=1e-6)
    with pytest.raises(ConfigError, match="unknown reverse variance 'learned'"):
        L.reverse_variances(s, "learned")


def test_bits_per_dim_and_dequantisation():
    assert L.bits_per_dim(torch.tensor([10 * math.log(2)]), 10).item() == pytest.approx(1.0)
    assert L.bits_per_dim(torch.tensor([0.0]), 5, dequantized=True).item() == pytest.approx(
        math.log2(127.5))
    x = LEVELS[torch.randint(0, 256, (4000,), generator=gen())]
    u = L.dequantize(x, gen(1))
    assert (u - x).abs().max() <= 1 / 255 and abs((u - x).mean().item()) < 1e-4


def test_a_perfect_posterior_costs_nothing_but_the_decoder():
    """Data that is one point, x_0 = c: the exact denoiser returns c, so with the posterior
    variance every KL term is 0 and the bound is the prior term plus the decoder's bin
    probability under N(c, β̃_1), by hand."""
    c = LEVELS[77].item()
    point = lambda x, t, cond=None: Prediction(torch.full_like(x, c), x)  # noqa: E731
    point.schedule = LINEAR  # type: ignore[attr-defined]
    x0 = torch.full((5, 3), c)
    var = L.reverse_variances(LINEAR, "posterior")
    ks = torch.tensor([1, 2, 10, 500, 999])
    kl = L.vlb_terms(point, x0, ks, None, var, discrete=True, generator=gen())
    assert torch.allclose(kl, torch.zeros(5, dtype=torch.float64), atol=1e-12)
    dec = L.vlb_terms(point, x0, torch.zeros(5, dtype=torch.long), None, var, discrete=True,
                      generator=gen())
    s, h = math.sqrt(var[0].item()), 1 / 255
    assert dec[0].item() == pytest.approx(-3 * math.log(_phi(h / s) - _phi(-h / s)), rel=1e-9)


# --- importance sampling of the steps ----------------------------------------------------------

def test_stratified_steps_are_unbiased_and_exact_for_the_ideal_proposal():
    T, f = 200, torch.arange(1, 200, dtype=torch.float64) ** 2  # a loss per step k = 1..T−1
    ideal = f / f.sum()
    ks = L.stratified_steps(ideal, 64, 5, gen())
    assert ks.shape == (5, 64) and ks.min() >= 1 and ks.max() <= T - 1
    estimate = (f[ks - 1] / (5 * ideal[ks - 1])).sum(0)
    assert torch.allclose(estimate, torch.full_like(estimate, f.sum().item()))
    uniform = torch.full((T - 1,), 1 / (T - 1), dtype=torch.float64)
    ks = L.stratified_steps(uniform, 4000, 3, gen(1))
    estimate = (f[ks - 1] / (3 * uniform[ks - 1])).sum(0)
    mean, se = L.mean_and_sem(estimate)
    assert abs(mean - f.sum().item()) < 4 * se


def test_the_proposal_follows_the_loss_and_keeps_a_floor():
    den = Levels(LINEAR)
    x0 = LEVELS[torch.randint(0, 256, (32, 4), generator=gen())].float()
    p = L.vlb_proposal(den, x0, None, L.reverse_variances(LINEAR), discrete=True,
                       generator=gen(1))
    assert p.shape == (999,) and p.sum().item() == pytest.approx(1.0)
    assert p.min().item() >= L.UNIFORM_SHARE / 999 * (1 - 1e-9)
    assert p[:10].mean() > 10 * p[-100:].mean()  # small steps carry the bound of 8-bit data


# --- the estimators reach exact likelihoods ---------------------------------------------------

def exact_gaussian_vlb(schedule: Schedule, x0: torch.Tensor, s: float,
                       variance: str) -> torch.Tensor:
    """The variational bound of each x_0 [B, D] under x_0 ~ N(μ, s² I) with its exact
    denoiser, in nats, every term's expectation over ε in closed form: with g = a s² /
    (a² s² + b²), x_0 − x̂_0 = (1 − g a)(x_0 − μ) − g b ε."""
    ab = schedule.alphas_cumprod.double()
    prev = torch.cat([ab.new_ones(1), ab[:-1]])
    beta = 1 - ab / prev
    var = L.reverse_variances(schedule, variance)[None, :, None]
    a, b, x = ab.sqrt()[None, :, None], (1 - ab).sqrt()[None, :, None], x0[:, None, :]
    g = a * s**2 / (a**2 * s**2 + b**2)
    err2 = (1 - g * a) ** 2 * (x - MU) ** 2 + g**2 * b**2  # E (x_0 − x̂_0)², [B, T, D]
    c0 = (prev.sqrt() * beta / (1 - ab))[None, :, None]
    post = (beta * (1 - prev) / (1 - ab))[None, :, None]
    kl = 0.5 * (torch.log(var / post) + post / var - 1) + c0**2 * err2 / (2 * var)
    decoder = 0.5 * (torch.log(2 * math.pi * var[:, 0]) + err2[:, 0] / var[:, 0])
    return L.prior_kl(x0, schedule) + kl[:, 1:].sum((1, 2)) + decoder.sum(1)


def gaussian_nll(x: torch.Tensor, cov: torch.Tensor) -> torch.Tensor:
    return -torch.distributions.MultivariateNormal(MU, cov).log_prob(x.double())


@pytest.mark.parametrize("variance", ["beta", "posterior"])
def test_the_bound_reaches_the_gaussian_nll(variance):
    """The estimate is unbiased for the bound; with β variances (right for smooth data) the
    bound is the exact NLL to within 0.0011 nats per dimension at T = 1000, with β̃ it is loose
    by about 0.57 (β̃ assumes x_0 is known once x_1 is: Ho et al. §3.2)."""
    s, n = 0.5, 3000
    cov = torch.eye(4, dtype=torch.float64) * s**2
    x0 = (MU + s * torch.randn(n, 4, generator=gen(), dtype=torch.float64)).float()
    den, var = Gaussian(LINEAR, cov), L.reverse_variances(LINEAR, variance)
    g = gen(1)
    proposal = L.vlb_proposal(den, x0[:64], None, var, discrete=False, generator=g)
    bound = L.vlb_nll(den, x0, None, proposal, var, discrete=False, t_samples=8, generator=g)
    exact_bound = exact_gaussian_vlb(LINEAR, x0.double(), s, variance)
    within(bound.total, exact_bound)
    nll = gaussian_nll(x0, cov)
    gap = (exact_bound - nll).mean().item() / 4  # nats per dimension
    if variance == "beta":
        assert 0 < gap < 0.0015
        within(bound.total, nll, slack=4 * 0.0015)
    else:
        assert 0.5 < gap < 0.65


def test_the_bound_of_8bit_data_matches_every_step_summed():
    """On discrete data the importance-sampled bound equals the sum of all T terms (each
    averaged over noise draws), and bounds the exact 8 bits of uniform levels."""
    schedule = Schedule("linear", 100, 1e-3, 0.2)
    den, var = Levels(schedule), L.reverse_variances(schedule)
    x0 = LEVELS[torch.randint(0, 256, (400, 4), generator=gen())].float()
    g = gen(1)
    proposal = L.vlb_proposal(den, x0[:64], None, var, discrete=True, generator=g)
    bound = L.vlb_nll(den, x0, None, proposal, var, discrete=True, t_samples=8, generator=g)
    draws = 4
    full = sum(L.vlb_terms(den, x0, torch.full((400,), k), None, var, discrete=True,
                           generator=g)
               for k in range(schedule.T) for _ in range(draws)) / draws
    full = full + L.prior_kl(x0, schedule)
    within(bound.total, full)
    bits, se = L.mean_and_sem(L.bits_per_dim(bound.total, 4))
    assert bits > 8 - 4 * se


def test_the_ode_reaches_the_gaussian_nll():
    """A correlated Gaussian, so that Hutchinson's probes carry real variance: the ODE's
    −log p equals the exact −log N(x; μ, Σ + σ_min² I) (the model's density at σ_min)."""
    a = torch.tensor([[1.0, 0.6, 0.0, 0.2], [0.0, 0.5, 0.3, 0.0], [0.0, 0.0, 0.4, -0.3],
                      [0.0, 0.0, 0.0, 0.3]], dtype=torch.float64)
    cov = a @ a.T
    x = (MU + torch.randn(400, 4, generator=gen(), dtype=torch.float64) @ a.T).float()
    den = Gaussian(LINEAR, cov)
    s_min = L.ode_sigmas(LINEAR)[0]
    exact = gaussian_nll(x, cov + s_min**2 * torch.eye(4, dtype=torch.float64))
    for solver, steps in (("rk4", 24), ("heun", 64)):
        nll = L.ode_nll(den, x, None, steps=steps, solver=solver, generator=gen(2))
        assert L.mean_and_sem(nll - exact)[1] > 1e-3  # the trace estimate is not exact ...
        within(nll, exact, slack=2e-3)  # ... but unbiased


def test_the_ode_gives_8_bits_for_uniform_8bit_data():
    """Uniform 8-bit levels hold exactly 8 bits per dimension; dequantised, their density is
    flat on [-1 − 1/255, 1 + 1/255], and the ODE with its exact denoiser gives it back in the
    8-bit convention (up to the blur of σ_min at the two ends, in closed form)."""
    x0 = LEVELS[torch.randint(0, 256, (300, 4), generator=gen())].float()
    u = L.dequantize(x0, gen(1))
    nll = L.ode_nll(Dequantised(LINEAR), u, None, steps=32, generator=gen(2))
    s_min = L.ode_sigmas(LINEAR)[0]
    mass = (torch.special.ndtr((HI - u.double()) / s_min)
            - torch.special.ndtr((LO - u.double()) / s_min))
    exact = -torch.log(mass / (HI - LO)).sum(1)  # −log p_σmin(u)
    within(nll, exact, slack=3e-3)  # 32 RK4 steps: a bias of 0.0009 nats per point
    bits, se = L.mean_and_sem(L.bits_per_dim(nll, 4, dequantized=True))
    assert abs(bits - 8) < 0.01 + 4 * se


def test_bad_options_are_refused():
    with pytest.raises(ConfigError, match="unknown bpd estimator 'elbo'"):
        L.check_options(("elbo",), t_samples=1, ode_steps=1, solver="rk4", variance="beta")
    with pytest.raises(ConfigError, match="unknown ODE solver 'euler'"):
        L.check_options(("ode",), t_samples=1, ode_steps=1, solver="euler", variance="beta")
    with pytest.raises(ConfigError, match="--bpd-ode-steps must be a positive integer, got 0"):
        L.check_options(("ode",), t_samples=1, ode_steps=0, solver="rk4", variance="beta")
