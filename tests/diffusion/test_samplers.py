"""Samplers against closed forms.

For Gaussian data x_0 ~ N(μ, s² I) the denoiser is known exactly (`Gaussian`), and so is the
probability-flow ODE: in σ-space (x_σ = x_t sqrt(1 + σ²) = x_0 + σ ε) it maps
x_σ − μ ∝ sqrt(s² + σ²). Every sampler must reproduce (μ, s²); the ODE samplers must converge
to the exact ODE solution as steps grow.
"""

import inspect
import math

import pytest
import torch

from inkfuse.diffusion import Condition, Denoiser, Prediction, Schedule, cfg
from inkfuse.diffusion.denoiser import coefficients, training_target
from inkfuse.diffusion.samplers import SAMPLERS, Sampler, get_sampler
from inkfuse.diffusion.samplers.ancestral import ancestral_split, euler_ancestral_step
from inkfuse.diffusion.samplers.ddim import ddim_step
from inkfuse.diffusion.samplers.ddpm import ddpm_step
from inkfuse.diffusion.samplers.dpmpp import dpmpp_2m_step
from inkfuse.diffusion.samplers.euler import churn_gamma, churn_step, euler_step
from inkfuse.diffusion.samplers.heun import heun_step
from inkfuse.diffusion.samplers.repaint import repaint, repaint_path
from inkfuse.diffusion.samplers.restart import karras_sigmas, restart_jump
from inkfuse.diffusion.samplers.sde import dpmpp_2m_sde_step, dpmpp_3m_sde_step
from inkfuse.diffusion.samplers.unipc import unic_step
from inkfuse.diffusion.samplers.walk import forward_jump
from inkfuse.diffusion.schedule import SPACINGS, karras_timesteps, timestep_grid, timesteps
from inkfuse.errors import ConfigError

MU, S = torch.tensor([0.5, -0.25, 0.0, 1.0]), 0.5
LINEAR = Schedule("linear", 1000)
ODE_SAMPLERS = ["ddim", "euler", "heun", "dpmpp-2m", "unipc"]

# Thousands of small-tensor calls: a second intra-op thread only spins against the first.
pytestmark = pytest.mark.usefixtures("one_thread")


class Gaussian:
    """Exact denoiser for x_0 ~ N(μ, s² I): with x_t = a x_0 + b ε,
    E[x_0 | x_t] = μ + a s² (x_t − a μ) / (a² s² + b²),  ε̂ = (x_t − a x̂_0) / b."""

    def __init__(self, schedule, mu=MU, s=S):
        self.schedule, self.mu, self.s, self.seen = schedule, mu, s, []

    def __call__(self, x, t, cond=None):
        self.seen.append(t)
        a, b = coefficients(self.schedule, t, x)
        x0 = self.mu + a * self.s**2 * (x - a * self.mu) / (a**2 * self.s**2 + b**2)
        return Prediction(x0, (x - a * x0) / b)


def noise(n=4096, seed=0):
    return torch.randn(n, len(MU), generator=torch.Generator().manual_seed(seed))


def exact_ode(x_T, sigma):
    """The probability-flow ODE from VP x_T at noise level σ to σ = 0, for Gaussian data."""
    x = x_T.double() * math.sqrt(1 + sigma**2)
    return MU + (x - MU) * S / math.sqrt(S**2 + sigma**2)


def run(name, schedule, steps, x_T, spacing=None, seed=1, **options):
    ts = timestep_grid(schedule, steps, spacing or SAMPLERS[name].spacing)
    gen = torch.Generator().manual_seed(seed)
    return SAMPLERS[name](Gaussian(schedule), x_T, ts, generator=gen, **options), ts


# --- every sampler reproduces the data distribution ------------------------------------------

@pytest.mark.parametrize(("name", "steps", "options", "tol"), [
    ("ddpm", 1000, {}, 0.04),  # ancestral steps are biased by O(1/steps): β̃ < true variance
    ("ddim", 200, {}, 0.04),  # first order
    ("ddim", 1000, {"eta": 1.0}, 0.04),
    ("euler", 200, {}, 0.04),
    ("euler", 200, {"churn": 10.0}, 0.08),  # γ = 0.05 per step
    ("heun", 50, {}, 0.04),
    ("heun", 50, {"churn": 10.0}, 0.08),  # γ = 0.2 per step
    ("dpmpp-2m", 50, {}, 0.04),
    ("unipc", 50, {}, 0.04),
    ("euler-ancestral", 1000, {}, 0.04),  # first order, like DDPM
    ("euler-ancestral", 1000, {"eta": 0.5}, 0.04),
    ("dpmpp-2m-sde", 100, {}, 0.04),
    ("dpmpp-2m-sde", 100, {"eta": 0.5}, 0.04),
    ("dpmpp-3m-sde", 100, {}, 0.04),
    ("restart", 50, {}, 0.04),
])
def test_samplers_reproduce_gaussian_data(name, steps, options, tol):
    x_T, var_errors = noise(), []
    for n in (steps // 5, steps):
        out, _ = run(name, LINEAR, n, x_T, **options)
        z = (out - MU) / S
        assert (out.mean(0) - MU).abs().max() < 0.035  # 4.5 standard errors per dimension
        assert abs(z.mean().item()) < 0.03
        var_errors.append(abs(z.var().item() - 1))
    assert var_errors[1] < min(tol, var_errors[0]), var_errors


@pytest.mark.parametrize("name", ["heun", "dpmpp-2m", "unipc"])
@pytest.mark.parametrize("spacing", ["trailing", "karras"])
def test_samplers_work_on_a_small_discrete_T(name, spacing):
    """A T = 50 model: the trailing grid visits every trained step (integers), the Karras grid
    fractional ones inside [0, T − 1]."""
    schedule = Schedule("cosine", 50)
    den = Gaussian(schedule)
    ts = timestep_grid(schedule, 50, spacing)
    out = SAMPLERS[name](den, noise(), ts)
    z = (out - MU) / S
    assert abs(z.mean().item()) < 0.03 and abs(z.var().item() - 1) < 0.05
    seen = torch.cat(den.seen)
    assert seen.min() >= 0 and seen.max() <= 49
    if spacing == "trailing":
        assert torch.equal(seen, seen.round())


# --- deterministic samplers converge to the exact ODE solution ----------------------------------

ORDER = {"ddim": 1, "euler": 1, "heun": 2, "dpmpp-2m": 2, "unipc": 3}


@pytest.mark.parametrize("name", ODE_SAMPLERS)
@pytest.mark.parametrize("spacing", ["trailing", "karras"])
def test_ode_samplers_converge(name, spacing):
    """RMS error against the exact ODE solution at 5, 10, 20, 40, 50 steps; on the Karras grid,
    doubling 20 → 40 steps divides the error by about 2^order."""
    x_T = noise(512)
    errors = []
    for steps in (5, 10, 20, 40, 50):
        out, ts = run(name, LINEAR, steps, x_T, spacing)
        exact = exact_ode(x_T, LINEAR.sigma(ts[:1]).item())
        errors.append((out.double() - exact).pow(2).mean().sqrt().item())
    assert errors[-1] < errors[0] and errors[-1] < errors[1], errors
    assert errors[-1] < (0.04 if ORDER[name] == 1 else 0.006), errors
    if spacing == "karras":
        assert errors[2] / errors[3] > 0.8 * 2 ** ORDER[name], errors


def test_ddim_is_euler_in_sigma_space():
    x_T = noise(256)
    a, _ = run("ddim", LINEAR, 10, x_T, "karras")
    b, _ = run("euler", LINEAR, 10, x_T, "karras")
    assert torch.allclose(a, b, atol=1e-4)


# --- one step of each update, by hand -------------------------------------------------------------

def t1(v):
    return torch.tensor([v], dtype=torch.float64)


def test_euler_and_heun_steps_by_hand():
    x, d0, d1 = t1(1.0), t1(0.2), t1(0.1)
    # d = (1 − 0.2) / 2 = 0.4;  x' = 1 + (1 − 2) · 0.4 = 0.6
    assert euler_step(x, d0, 2.0, 1.0).item() == pytest.approx(0.6)
    # d' = (0.6 − 0.1) / 1 = 0.5;  x' = 1 + (1 − 2) (0.4 + 0.5) / 2 = 0.55
    assert heun_step(x, t1(0.6), d0, d1, 2.0, 1.0).item() == pytest.approx(0.55)


def test_churn_by_hand():
    assert churn_gamma(1.0, 10, 2.0, 0.0, math.inf) == pytest.approx(0.2)  # S_churn / N
    assert churn_gamma(1.0, 10, 50.0, 0.0, math.inf) == pytest.approx(math.sqrt(2) - 1)
    assert churn_gamma(1.0, 10, 2.0, 0.0, 0.5) == 0.0  # σ above S_tmax
    assert churn_gamma(1.0, 10, 0.0, 0.0, math.inf) == 0.0
    # x̂ = 1 + sqrt(1.2² − 1²) · 0.5
    assert churn_step(t1(1.0), 1.0, 1.2, t1(0.5)).item() == pytest.approx(1 + math.sqrt(0.44) / 2)


def test_dpmpp_2m_step_by_hand():
    x, d0, d_old = t1(1.0), t1(0.2), t1(0.4)
    # First order: σ'/σ x − (e^{−h} − 1) x̂_0 with h = log 2: 0.5 + 0.5 · 0.2 = 0.6 (= Euler, DDIM).
    assert dpmpp_2m_step(x, d0, 2.0, 1.0).item() == pytest.approx(0.6)
    # σ_prev = 4: h_prev = h = log 2, r = 1, D = 1.5 · 0.2 − 0.5 · 0.4 = 0.1; 0.5 + 0.5 · 0.1
    assert dpmpp_2m_step(x, d0, 2.0, 1.0, d_old, 4.0).item() == pytest.approx(0.55)
    # σ_prev = 3: r = log(3/2) / log 2
    r = math.log(1.5) / math.log(2)
    dd = (1 + 1 / (2 * r)) * 0.2 - 1 / (2 * r) * 0.4
    assert dpmpp_2m_step(x, d0, 2.0, 1.0, d_old, 3.0).item() == pytest.approx(0.5 + 0.5 * dd)
    # To σ = 0 the step returns x̂_0.
    assert dpmpp_2m_step(x, d0, 2.0, 0.0, d_old, 4.0).item() == pytest.approx(0.2)


def unipc_reference(x, m0, m_t, sigma, sigma_next, m1=None, sigma_prev=None):
    """UniC-p in the form of the UniPC reference code (B(h) = e^{−h} − 1 in λ = −log σ, ρ from
    R ρ = b with R_{k,j} = r_j^k, b_k = h_φ_{k+1} k! / B(h)), written out for p ≤ 2."""
    lam = lambda s: -math.log(s)  # noqa: E731
    h = lam(sigma_next) - lam(sigma)
    hh = -h
    big_b = math.expm1(hh)
    hphi1 = math.expm1(hh)
    hphi_k1 = hphi1 / hh - 1
    hphi_k2 = hphi_k1 / hh - 1 / 2
    b1, b2 = hphi_k1 * 1 / big_b, hphi_k2 * 2 / big_b
    x_t_ = sigma_next / sigma * x - hphi1 * m0
    if m1 is None:
        return x_t_ - big_b * 0.5 * (m_t - m0)
    r1 = (lam(sigma_prev) - lam(sigma)) / h
    rho = torch.linalg.solve(torch.tensor([[1.0, 1.0], [r1, 1.0]], dtype=torch.float64),
                             torch.tensor([b1, b2], dtype=torch.float64))
    d1 = (m1 - m0) / r1
    return x_t_ - big_b * (rho[0].item() * d1 + rho[1].item() * (m_t - m0))


def test_unipc_steps_by_hand():
    x, m0, m_t, m1 = 1.0, 0.2, 0.1, 0.4
    # UniC-1: 0.5 · 1 + 0.5 · 0.2 + 0.5 · (0.1 − 0.2) / 2 = 0.575
    assert unic_step(t1(x), t1(m0), t1(m_t), 2.0, 1.0).item() == pytest.approx(0.575)
    assert unipc_reference(x, m0, m_t, 2.0, 1.0) == pytest.approx(0.575)
    for sigma_prev in (4.0, 3.0):
        got = unic_step(t1(x), t1(m0), t1(m_t), 2.0, 1.0, t1(m1), sigma_prev).item()
        assert got == pytest.approx(unipc_reference(x, m0, m_t, 2.0, 1.0, m1, sigma_prev))
    # UniP-2 with B(h) = e^{−h} − 1 and ρ = 1/2 is DPM-Solver++(2M).
    lam = lambda s: -math.log(s)  # noqa: E731
    h, big_b = lam(1.0) - lam(2.0), math.expm1(-(lam(1.0) - lam(2.0)))
    r1 = (lam(3.0) - lam(2.0)) / h
    unip = 0.5 * x - big_b * m0 - big_b * 0.5 * (m1 - m0) / r1
    assert dpmpp_2m_step(t1(x), t1(m0), 2.0, 1.0, t1(m1), 3.0).item() == pytest.approx(unip)


def test_unic_2_is_exact_for_quadratic_x0_in_lambda():
    """x(λ') = (σ'/σ) x + σ' ∫ e^λ x̂_0(λ) dλ is integrated exactly when x̂_0 is quadratic in λ."""
    c = (0.3, -0.7, 0.25)
    p = lambda lam: c[0] + c[1] * lam + c[2] * lam**2  # noqa: E731
    antiderivative = lambda lam: math.exp(lam) * (  # noqa: E731
        c[0] + c[1] * (lam - 1) + c[2] * (lam**2 - 2 * lam + 2))
    sigma_prev, sigma, sigma_next, x = 3.0, 1.5, 0.6, 0.8
    lp, l0, l1 = -math.log(sigma_prev), -math.log(sigma), -math.log(sigma_next)
    exact = sigma_next / sigma * x + sigma_next * (antiderivative(l1) - antiderivative(l0))
    got = unic_step(t1(x), t1(p(l0)), t1(p(l1)), sigma, sigma_next, t1(p(lp)), sigma_prev)
    assert got.item() == pytest.approx(exact, rel=1e-10)


def test_ddpm_step_by_hand():
    ab_t, ab_prev, x, x0, z = t1(0.5), t1(0.8), t1(1.0), t1(0.2), t1(0.3)
    pred = Prediction(x0, (x - math.sqrt(0.5) * x0) / math.sqrt(0.5))
    alpha, beta = 0.5 / 0.8, 1 - 0.5 / 0.8
    mean = (math.sqrt(0.8) * beta * 0.2 + math.sqrt(alpha) * (1 - 0.8) * 1.0) / (1 - 0.5)
    var = beta * (1 - 0.8) / (1 - 0.5)  # β̃ = 0.15
    assert ddpm_step(x, pred, ab_t, ab_prev, None).item() == pytest.approx(mean)
    assert ddpm_step(x, pred, ab_t, ab_prev, z).item() == pytest.approx(mean + math.sqrt(var) * 0.3)


def test_ddim_step_by_hand_and_eta_1_is_ddpm():
    ab_t, ab_prev, x, x0, z = t1(0.5), t1(0.8), t1(1.0), t1(0.2), t1(0.3)
    eps = (1.0 - math.sqrt(0.5) * 0.2) / math.sqrt(0.5)
    pred = Prediction(x0, t1(eps))
    # η = 0: sqrt(ᾱ_prev) x̂_0 + sqrt(1 − ᾱ_prev) ε̂
    expect = math.sqrt(0.8) * 0.2 + math.sqrt(0.2) * eps
    assert ddim_step(x, pred, ab_t, ab_prev, z, eta=0.0).item() == pytest.approx(expect)
    # η = 1: σ² = (1 − ᾱ_prev)/(1 − ᾱ_t) (1 − ᾱ_t/ᾱ_prev) = 0.4 · 0.375 = 0.15 = DDPM's β̃
    var = 0.2 / 0.5 * (1 - 0.5 / 0.8)
    assert var == pytest.approx(0.15)
    expect = math.sqrt(0.8) * 0.2 + math.sqrt(0.2 - var) * eps + math.sqrt(var) * 0.3
    got = ddim_step(x, pred, ab_t, ab_prev, z, eta=1.0)
    assert got.item() == pytest.approx(expect)
    noise_part = got - ddim_step(x, pred, ab_t, ab_prev, t1(0.0), eta=1.0)
    assert noise_part.item() == pytest.approx(math.sqrt(0.15) * 0.3)
    # ... and with ε̂ consistent with x̂_0, DDIM(η = 1) is exactly the DDPM posterior step.
    assert got.item() == pytest.approx(ddpm_step(x, pred, ab_t, ab_prev, z).item())


# --- training targets, guidance, seeds, call counts -----------------------------------------------

class Oracle(torch.nn.Module):
    """A 'network' trained to perfection on Gaussian data with target eps, x0 or v."""

    def __init__(self, schedule, target):
        super().__init__()
        self.exact, self.schedule, self.target = Gaussian(schedule), schedule, target

    def forward(self, x, t, *condition, **inputs):  # the condition is ignored
        pred = self.exact(x, t)
        a, b = coefficients(self.schedule, t, x)
        return training_target(self.target, pred.x0, pred.eps, a, b)


@pytest.mark.parametrize("target", ["eps", "x0", "v"])
@pytest.mark.parametrize("name", list(SAMPLERS))
def test_every_training_target_gives_the_same_samples(name, target):
    x_T = noise(64)
    ts = timestep_grid(LINEAR, 8, SAMPLERS[name].spacing)
    den = Denoiser(Oracle(LINEAR, target), LINEAR, target, clip=None)
    got = SAMPLERS[name](den, x_T, ts, generator=torch.Generator().manual_seed(3))
    want = SAMPLERS[name](Gaussian(LINEAR), x_T, ts, generator=torch.Generator().manual_seed(3))
    assert torch.allclose(got, want, atol=2e-4)


class CondNet(torch.nn.Module):
    """ε̂ depends on x, t and, unless dropped, on the condition vector."""

    def forward(self, x, t, cond=None, *, vector=None, drop=None, **inputs):
        if cond is not None:  # networks that take the Condition rather than its tensors
            vector, drop = cond.vector, cond.drop
        shift = vector.sum(1, keepdim=True) * (~drop)[:, None]
        return 0.1 * x + 0.3 * shift + 1e-4 * t[:, None].float()


def test_cfg_weights_select_the_branches():
    s = Schedule("cosine", 100)
    base = Denoiser(CondNet(), s, "eps", clip=None)
    cond = Condition.from_labels(torch.tensor([0, 1, 2, 1]), 3)
    cond.vector *= torch.tensor([1.0, 2.0, 3.0])  # distinct per class
    x, t = torch.randn(4, 2), torch.tensor(40.5)
    c, u = base(x, t.expand(4), cond), base(x, t.expand(4), cond.null_like())
    assert not torch.allclose(c.eps, u.eps)
    assert torch.allclose(cfg(base, 1.0)(x, t, cond).eps, c.eps)
    assert torch.allclose(cfg(base, 0.0)(x, t, cond).eps, u.eps)
    g = cfg(base, 3.0)(x, t, cond)  # the batched [cond, null] pass
    assert torch.allclose(g.eps, u.eps + 3.0 * (c.eps - u.eps), atol=1e-6)
    a, b = coefficients(s, t.expand(4), x)
    assert torch.allclose(g.x0, (x - b * g.eps) / a, atol=1e-5)
    for name in ("euler", "heun", "unipc"):
        ts, x_T = karras_timesteps(s, 6), torch.randn(4, 2)
        fn = SAMPLERS[name]
        assert torch.allclose(fn(cfg(base, 1.0), x_T, ts, cond), fn(base, x_T, ts, cond))
        assert torch.allclose(fn(cfg(base, 0.0), x_T, ts, cond),
                              fn(base, x_T, ts, cond.null_like()))
        guided = fn(cfg(base, 3.0), x_T, ts, cond)
        assert guided.isfinite().all() and not torch.allclose(guided, fn(base, x_T, ts, cond))


def test_a_mix_of_conditions_composes_their_guidance():
    """Composable diffusion: ε_u + w Σ a_i (ε_i − ε_u), the k conditions stacked as k blocks."""
    s = Schedule("cosine", 100)
    base = Denoiser(CondNet(), s, "eps", clip=None)
    a = Condition.from_vectors(torch.tensor([[1.0, 0.0], [0.0, 2.0]]))
    b = Condition.from_vectors(torch.tensor([[0.0, 3.0], [1.0, 1.0]]))
    x, t = torch.randn(2, 2), torch.tensor([30, 60])
    ea, eb, eu = (base(x, t, c).eps for c in (a, b, a.null_like()))
    mixed = cfg(base, 2.5, weights=(0.7, 0.3))(x, t, Condition.cat([a, b]))
    want = eu + 2.5 * (0.7 * (ea - eu) + 0.3 * (eb - eu))
    assert torch.allclose(mixed.eps, want, atol=1e-6)
    same = cfg(base, 2.5, weights=(0.5, 0.5))(x, t, Condition.cat([a, a]))
    assert torch.allclose(same.eps, cfg(base, 2.5)(x, t, a).eps, atol=1e-6)


@pytest.mark.parametrize(("name", "options"), [
    ("ddpm", {}), ("ddim", {"eta": 1.0}), ("euler", {"churn": 5.0}), ("heun", {"churn": 5.0}),
    ("euler", {}), ("dpmpp-2m", {}), ("unipc", {}), ("euler-ancestral", {"eta": 1.0}),
    ("dpmpp-2m-sde", {"eta": 1.0}), ("dpmpp-3m-sde", {"eta": 1.0}),
    ("restart", {"restart_times": 1}),
])
def test_same_seed_same_samples(name, options):
    x_T = noise(32)
    a, _ = run(name, LINEAR, 10, x_T, seed=7, **options)
    b, _ = run(name, LINEAR, 10, x_T, seed=7, **options)
    c, _ = run(name, LINEAR, 10, x_T, seed=8, **options)
    assert torch.equal(a, b)
    noisy = name == "ddpm" or bool(options)
    assert torch.equal(a, c) is not noisy  # only the stochastic ones depend on the seed


@pytest.mark.parametrize("name", list(SAMPLERS))
def test_on_step_sees_every_step_in_vp_scale_and_nfe_counts_calls(name):
    steps, den, calls = 20, Gaussian(LINEAR), []
    ts = timestep_grid(LINEAR, steps, SAMPLERS[name].spacing)
    out = SAMPLERS[name](den, noise(), ts, on_step=lambda i, x, pred: calls.append((i, x)))
    assert [i for i, _ in calls] == list(range(steps))
    assert len(den.seen) == SAMPLERS[name].nfe(steps)
    assert torch.equal(calls[-1][1], out)
    # Halfway, x is a VP sample x_t ~ N(a μ, a² s² + b²) at the next grid step.
    i = steps // 2
    ab = LINEAR.alpha_bar(ts[i + 1 : i + 2].float()).item()
    x = calls[i][1]
    assert (x.mean(0) - math.sqrt(ab) * MU).abs().max() < 0.05
    assert x.var().item() == pytest.approx(ab * S**2 + 1 - ab, rel=0.1)


def test_nfe():
    assert SAMPLERS["heun"].nfe(10) == 19 and SAMPLERS["heun"].nfe(1) == 1
    assert SAMPLERS["restart"].nfe(10) == 19 + 2 * 9 and SAMPLERS["restart"].nfe(1) == 1
    assert all(SAMPLERS[name].nfe(10) == 10 for name in SAMPLERS if name not in ("heun", "restart"))


# --- the registry -------------------------------------------------------------------------------

@pytest.mark.parametrize("name", list(SAMPLERS))
def test_registry_entry_is_complete(name):
    """The entry names every option of its function, with the function's own default, and
    nothing else; the function follows the contract fn(denoiser, x, grid, cond=None, *,
    generator=None, on_step=None, **options)."""
    entry = SAMPLERS[name]
    assert isinstance(entry, Sampler) and entry.name == name and get_sampler(name) is entry
    assert entry.spacing in SPACINGS and callable(entry.nfe)
    params = inspect.signature(entry.fn).parameters
    positional = [p for p in params.values() if p.kind is p.POSITIONAL_OR_KEYWORD]
    assert [p.name for p in positional] == ["denoiser", "x", "grid", "cond"]
    assert positional[-1].default is None
    keyword = {p.name: p.default for p in params.values() if p.kind is p.KEYWORD_ONLY}
    assert keyword.pop("generator") is None and keyword.pop("on_step") is None
    assert keyword == {option: spec.default for option, spec in entry.options.items()}
    assert all(spec.doc for spec in entry.options.values())
    assert set(params) == {p.name for p in positional} | {"generator", "on_step"} | set(keyword)


def test_registry_keeps_the_course_options():
    assert SAMPLERS["ddpm"].options["noise"].default is True
    assert SAMPLERS["ddim"].options["eta"].default == 0.0
    for name in ("euler", "heun"):
        assert set(SAMPLERS[name].options) == {"churn", "churn_sigma_min", "churn_sigma_max",
                                               "churn_noise"}
    assert not SAMPLERS["dpmpp-2m"].options and not SAMPLERS["unipc"].options


def test_an_option_the_sampler_lacks_is_a_one_line_config_error():
    ts, x_T = timestep_grid(LINEAR, 4), noise(8)
    with pytest.raises(ConfigError) as e:
        SAMPLERS["ddim"](Gaussian(LINEAR), x_T, ts, churn=2.0)
    assert str(e.value) == "sampler 'ddim' has no option churn (its options: eta)"
    with pytest.raises(ConfigError, match=r"^sampler 'unipc' has no option eta \(its options: "
                                          r"none\)$"):
        SAMPLERS["unipc"].check({"eta": 0.0})
    with pytest.raises(ConfigError, match="choose from ddpm, ddim, euler, heun, dpmpp-2m, unipc"):
        get_sampler("plms")
    assert SAMPLERS["euler"].check({"churn": 1.0}) == {"churn": 1.0}
    # a recipe's settings: each sampler takes those it names
    settings = {"eta": 0.5, "churn": 1.0, "guidance": 3.0}
    assert SAMPLERS["ddim"].select(settings) == {"eta": 0.5}
    assert SAMPLERS["heun"].select(settings) == {"churn": 1.0}
    assert SAMPLERS["unipc"].select(settings) == {}


def test_calling_the_entry_is_calling_its_function():
    ts, x_T = timestep_grid(LINEAR, 6), noise(16)
    for name, options in [("ddim", {"eta": 1.0}), ("ddpm", {"noise": False})]:
        a = SAMPLERS[name](Gaussian(LINEAR), x_T, ts, generator=torch.Generator().manual_seed(1),
                           **options)
        b = SAMPLERS[name].fn(Gaussian(LINEAR), x_T, ts, generator=torch.Generator().manual_seed(1),
                              **options)
        assert torch.equal(a, b)


# --- inpainting: DDPM's update wrapped, on the shared loop --------------------------------------

def test_repaint_path_by_hand():
    grid = torch.tensor([9, 6, 3, 0])
    assert repaint_path(grid, 1).tolist() == [9, 6, 3, 0]
    assert repaint_path(grid, 2).tolist() == [9, 6, 9, 6, 3, 6, 3, 0, 3, 0]
    assert repaint_path(grid, 3).tolist() == [9, 6, 9, 6, 9, 6, 3, 6, 3, 6, 3, 0, 3, 0, 3, 0]
    assert repaint_path(grid[:1], 3).tolist() == [9]


def test_forward_jump_by_hand():
    # ᾱ 0.8 -> 0.5: α = 0.625, x' = sqrt(0.625) · 1 + sqrt(0.375) · 0.3
    got = forward_jump(t1(1.0), t1(0.8), t1(0.5), t1(0.3)).item()
    assert got == pytest.approx(math.sqrt(0.625) + math.sqrt(0.375) * 0.3)


@pytest.mark.parametrize("resample", [1, 2])
def test_repaint_keeps_known_values_exactly_and_samples_the_rest(resample):
    """Known entries come back bit for bit; the unknown ones still follow the data distribution
    (a wrong jump back up would change their variance; at 1000 steps the ancestral steps' own
    bias is small), and the model is called once per step down: (N − 1) R + 1 times."""
    x0 = MU + S * noise(4096, seed=5)
    keep = torch.tensor([True, False, True, False])  # per dimension, broadcast over samples
    den, calls, steps = Gaussian(LINEAR), [], 1000
    ts = timestep_grid(LINEAR, steps, "trailing")
    out = repaint(den, noise(), ts, x0=x0, keep=keep, resample=resample,
                  generator=torch.Generator().manual_seed(2), on_step=lambda *a: calls.append(1))
    assert torch.equal(out[:, keep], x0[:, keep])
    z = (out[:, ~keep] - MU[~keep]) / S
    assert abs(z.mean().item()) < 0.03 and abs(z.var().item() - 1) < 0.04
    assert len(den.seen) == len(calls) == (steps - 1) * resample + 1


# --- timestep grids ------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["linear", "cosine", "sigmoid"])
@pytest.mark.parametrize("T", [50, 1000])
@pytest.mark.parametrize("steps", [1, 2, 7, 30, 100])
def test_karras_grid_is_descending_within_the_schedule(kind, T, steps):
    s = Schedule(kind, T)
    ts = karras_timesteps(s, steps)
    assert ts.shape == (steps,) and ts.is_floating_point()
    assert (ts[1:] < ts[:-1]).all() and ts.min() >= 0 and ts.max() <= T - 1
    assert ts[0] == T - 1 and (steps == 1 or ts[-1] == 0)
    if steps > 2:  # the σ's are EDM eq. 5 between σ_0 and σ_{T−1}
        lo, hi = s.sigmas[0].double() ** (1 / 7), s.sigmas[-1].double() ** (1 / 7)
        want = (hi + torch.arange(steps, dtype=torch.float64) / (steps - 1) * (lo - hi)) ** 7
        assert torch.allclose(s.sigma(ts).double(), want, rtol=1e-3)


def test_karras_grid_sigma_range_options():
    s = Schedule("cosine", 1000)
    ts = karras_timesteps(s, 10, sigma_max=80.0)
    assert s.sigma(ts[:1]).item() == pytest.approx(80.0, rel=1e-4) and ts[-1] == 0
    assert torch.equal(karras_timesteps(s, 10, sigma_max=1e9), karras_timesteps(s, 10))
    assert s.sigma(karras_timesteps(s, 10, sigma_min=0.1)[-1:]).item() == pytest.approx(0.1, 1e-4)
    with pytest.raises(ConfigError):
        karras_timesteps(s, 0)


def test_timestep_grid_spacings():
    s = Schedule("linear", 100)
    for spacing in ("leading", "trailing", "linspace"):
        assert torch.equal(timestep_grid(s, 10, spacing), torch.tensor(timesteps(100, 10, spacing)))
    assert torch.equal(timestep_grid(s, 10, "karras"), karras_timesteps(s, 10))
    assert timesteps(100, 4) == [99, 74, 49, 24]  # unchanged trailing behaviour
    with pytest.raises(ConfigError, match="karras_timesteps"):
        timesteps(100, 10, "karras")
    with pytest.raises(ConfigError, match="unknown timestep spacing"):
        timesteps(100, 10, "cosine")


# --- the stochastic σ-space samplers --------------------------------------------------------------

def test_euler_ancestral_step_by_hand():
    x, d0, z = t1(1.0), t1(0.2), t1(0.3)
    # η = 1, σ 2 → 1: σ_up = sqrt(1 · (4 − 1) / 4) = sqrt(0.75), σ_down = sqrt(1 − 0.75) = 0.5
    assert ancestral_split(2.0, 1.0, 1.0) == pytest.approx((0.5, math.sqrt(0.75)))
    # d = 0.4;  x' = 1 + (0.5 − 2) · 0.4 + sqrt(0.75) · 0.3
    got = euler_ancestral_step(x, d0, 2.0, 1.0, 1.0, z).item()
    assert got == pytest.approx(0.4 + math.sqrt(0.75) * 0.3)
    # η = 0 is Euler; a huge η caps σ_up at σ_next: x' = x̂_0 + σ_next z
    assert euler_ancestral_step(x, d0, 2.0, 1.0, 0.0, z).item() == pytest.approx(0.6)
    assert euler_ancestral_step(x, d0, 2.0, 1.0, 9.0, z).item() == pytest.approx(0.2 + 0.3)
    assert ancestral_split(2.0, 0.0, 1.0) == (0.0, 0.0)


def test_dpmpp_2m_sde_step_by_hand():
    x, d0, d_old, z = t1(1.0), t1(0.2), t1(0.4), t1(0.3)
    # η = 1, h = log 2: (σ'/σ) e^{−h} x + (1 − e^{−2h}) x̂_0 + σ' sqrt(1 − e^{−2h}) z
    first = 0.25 + 0.75 * 0.2 + math.sqrt(0.75) * 0.3
    assert dpmpp_2m_sde_step(x, d0, 2.0, 1.0, 1.0, z).item() == pytest.approx(first)
    # σ_prev = 4: r = 1, + ½ (1 − e^{−2h}) (x̂_0 − x̂_0,prev) = ½ · 0.75 · (−0.2)
    got = dpmpp_2m_sde_step(x, d0, 2.0, 1.0, 1.0, z, d_old, 4.0).item()
    assert got == pytest.approx(first - 0.075)
    # η = 0 (and no noise) is DPM-Solver++(2M)
    for prev in ((None, None), (d_old, 4.0), (d_old, 3.0)):
        assert dpmpp_2m_sde_step(x, d0, 2.0, 1.0, 0.0, z, *prev).item() == pytest.approx(
            dpmpp_2m_step(x, d0, 2.0, 1.0, *prev).item())
    assert dpmpp_2m_sde_step(x, d0, 2.0, 0.0, 1.0, z, d_old, 4.0).item() == pytest.approx(0.2)


def test_dpmpp_3m_sde_step_by_hand():
    x, d0, d1, d2, z = t1(1.0), t1(0.2), t1(0.4), t1(0.7), t1(0.3)
    first = 0.25 + 0.75 * 0.2 + math.sqrt(0.75) * 0.3  # as 2M SDE's first order (η = 1)
    assert dpmpp_3m_sde_step(x, d0, 2.0, 1.0, 1.0, z, []).item() == pytest.approx(first)
    # one previous x̂_0 at σ = 4: r_0 = 1, ĥ = 2 log 2, φ_2 = (e^{−ĥ} − 1)/ĥ + 1, + φ_2 (0.2 − 0.4)
    phi_2 = -0.75 / (2 * math.log(2)) + 1
    got = dpmpp_3m_sde_step(x, d0, 2.0, 1.0, 1.0, z, [(d1, 4.0)]).item()
    assert got == pytest.approx(first + phi_2 * (-0.2))
    # η = 0, σ 8, 4, 2 → 1: r_0 = r_1 = 1, D1_0 = −0.2, D1_1 = −0.3, D1 = −0.15, D2 = 0.05
    h = math.log(2)
    phi_2 = -0.5 / h + 1
    phi_3 = phi_2 / h - 0.5
    want = 0.5 + 0.5 * 0.2 + phi_2 * (-0.15) - phi_3 * 0.05
    got = dpmpp_3m_sde_step(x, d0, 2.0, 1.0, 0.0, z, [(d1, 4.0), (d2, 8.0)]).item()
    assert got == pytest.approx(want)
    assert dpmpp_3m_sde_step(x, d0, 2.0, 0.0, 1.0, z, [(d1, 4.0)]).item() == pytest.approx(0.2)


def test_restart_steps_by_hand():
    # the jump from σ = 0.1 to t_max = 2: x + sqrt(4 − 0.01) z
    got = restart_jump(t1(1.0), 0.1, 2.0, t1(0.3)).item()
    assert got == pytest.approx(1 + math.sqrt(3.99) * 0.3)
    levels = karras_sigmas(2.0, 0.1, 2)
    mid = ((2.0 ** (1 / 7) + 0.1 ** (1 / 7)) / 2) ** 7
    assert levels == pytest.approx([2.0, mid, 0.1])


@pytest.mark.parametrize(("name", "options", "same"), [
    ("euler-ancestral", {"eta": 0.0}, "euler"),
    ("dpmpp-2m-sde", {"eta": 0.0}, "dpmpp-2m"),
    ("restart", {"restart_times": 0}, "heun"),
])
def test_without_noise_the_stochastic_samplers_are_their_odes(name, options, same):
    x_T = noise(256)
    a, _ = run(name, LINEAR, 10, x_T, "karras", **options)
    b, _ = run(same, LINEAR, 10, x_T, "karras")
    assert torch.allclose(a, b, atol=1e-5)


def test_dpmpp_3m_sde_without_noise_converges_to_the_ode():
    x_T = noise(512)
    errors = []
    for steps in (10, 20, 40):
        out, ts = run("dpmpp-3m-sde", LINEAR, steps, x_T, eta=0.0)
        exact = exact_ode(x_T, LINEAR.sigma(ts[:1]).item())
        errors.append((out.double() - exact).pow(2).mean().sqrt().item())
    assert errors[2] < errors[1] < errors[0] and errors[2] < 0.006, errors


def test_restart_beats_heun_at_few_steps_and_converges_with_its_restart_steps():
    """The restart's noise contracts the main walk's error (Restart §3): at 10 Heun steps the
    variance is far closer; the restart's own ODE error shrinks with restart_steps."""
    x_T = noise()

    def var_error(name, steps, **options):
        out, _ = run(name, LINEAR, steps, x_T, **options)
        return abs(((out - MU) / S).var().item() - 1)

    assert var_error("restart", 10) < 0.1 < 0.3 < var_error("heun", 10)
    coarse = var_error("restart", 50, restart_steps=3)
    fine = var_error("restart", 50, restart_steps=20)
    assert fine < min(coarse, 0.04), (coarse, fine)
