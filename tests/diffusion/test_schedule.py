import math
from fractions import Fraction

import pytest
import torch

from inkfuse.diffusion import Schedule, loss_weight, timesteps
from inkfuse.errors import ConfigError


def test_linear_schedule_matches_closed_form():
    s = Schedule("linear", 150, 1e-4, 0.02)
    betas = torch.linspace(1e-4, 0.02, 150, dtype=torch.float64)
    ab = torch.cumprod(1 - betas, 0)
    assert torch.allclose(s.alphas_cumprod.double(), ab, atol=1e-6)
    t = torch.tensor([0, 10, 149])
    assert torch.allclose(s.snr(t).double(), ab[t] / (1 - ab[t]), rtol=1e-4)
    assert torch.allclose(s.sigmas.double(), ((1 - ab) / ab).sqrt(), rtol=1e-5)


def test_cosine_schedule_follows_nichol_dhariwal():
    s = Schedule("cosine", 1000)
    f = lambda t: math.cos((t / 1000 + 0.008) / 1.008 * math.pi / 2) ** 2  # noqa: E731
    for t in (0, 250, 500, 900):
        assert s.alphas_cumprod[t].item() == pytest.approx(f(t + 1) / f(0), rel=1e-4)


@pytest.mark.parametrize("kind", ["linear", "cosine", "sigmoid"])
def test_schedules_decrease_from_clean_to_noise(kind):
    ab = Schedule(kind, 1000).alphas_cumprod
    assert (ab[1:] < ab[:-1]).all() and ab[0] > 0.99 and ab[-1] < 0.01


def test_q_sample_is_the_closed_form_forward_process():
    s = Schedule("linear", 1000)
    x0, noise = torch.randn(3, 1, 4, 4), torch.randn(3, 1, 4, 4)
    t = torch.tensor([0, 499, 999])
    ab = s.alphas_cumprod[t].view(3, 1, 1, 1)
    assert torch.allclose(s.q_sample(x0, t, noise), ab.sqrt() * x0 + (1 - ab).sqrt() * noise)
    # Statistically: x_t has mean sqrt(ab) x0 and variance 1 - ab.
    x = s.q_sample(torch.ones(20000), torch.full((20000,), 300), torch.randn(20000))
    assert x.mean().item() == pytest.approx(s.alphas_cumprod[300].sqrt().item(), abs=0.02)
    assert x.var().item() == pytest.approx(1 - s.alphas_cumprod[300].item(), abs=0.02)


def test_fractional_steps_interpolate_and_invert():
    s = Schedule("cosine", 1000)
    t = torch.tensor([3.0, 100.5, 998.25])
    assert torch.allclose(s.sigma_to_t(s.sigma(t)), t, atol=1e-3)
    assert torch.allclose(s.alpha_bar(torch.tensor([7.0])), s.alphas_cumprod[7:8], rtol=1e-5)


def test_timestep_spacings():
    assert timesteps(1000, 10, "trailing") == list(range(999, 0, -100))
    assert timesteps(1000, 10, "leading") == list(range(900, -1, -100))
    assert timesteps(1000, 4, "linspace") == [999, 666, 333, 0]
    assert timesteps(50, 50) == list(range(49, -1, -1))
    with pytest.raises(ConfigError, match="between 1 and"):
        timesteps(50, 51)


def test_linspace_grid_is_exact_for_every_step_count():
    """i (T − 1) / (N − 1) as an exact fraction, rounded half to even (numpy's rule): in float32,
    ties such as 499.5 (N = 43) landed an ulp low and rounded down."""
    T = 1000
    for n in range(1, T + 1):
        want = [round(Fraction(i * (T - 1), max(n - 1, 1))) for i in range(n)]  # half to even
        assert timesteps(T, n, "linspace") == sorted(set(want), reverse=True), n
    assert 500 in timesteps(T, 43, "linspace") and 499 not in timesteps(T, 43, "linspace")
    assert timesteps(T, 1, "linspace") == [0]
    assert timesteps(5, 3, "linspace") == [4, 2, 0]
    assert timesteps(8, 3, "linspace") == [7, 4, 0]  # 3.5 -> 4 (even)
    assert timesteps(6, 3, "linspace") == [5, 2, 0]  # 2.5 -> 2 (even)


def test_min_snr_weights_agree_across_targets():
    snr = torch.tensor([0.1, 1.0, 5.0, 100.0])
    x0 = loss_weight(snr, "x0", "min-snr", 5.0)
    assert torch.allclose(x0, torch.tensor([0.1, 1.0, 5.0, 5.0]))
    # eps-MSE = snr * x0-MSE and v-MSE = (snr + 1) * x0-MSE, so the x0-space weights agree.
    assert torch.allclose(loss_weight(snr, "eps", "min-snr", 5.0) * snr, x0)
    assert torch.allclose(loss_weight(snr, "v", "min-snr", 5.0) * (snr + 1), x0)
    assert torch.equal(loss_weight(snr, "eps", "none"), torch.ones(4))
