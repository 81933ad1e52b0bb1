"""Zero-terminal-SNR schedules (Lin et al. 2024): the rescaling against hand computations, the
samplers at the terminal step (σ = ∞, capped in the σ view), the recipe rule on the target, and
a tiny run trained and sampled with the option."""

from __future__ import annotations

import math

import pytest
import torch

import inkfuse
from inkfuse import pipelines
from inkfuse.config import load_recipe
from inkfuse.diffusion import Prediction, Schedule
from inkfuse.diffusion.denoiser import coefficients
from inkfuse.diffusion.samplers import SAMPLERS
from inkfuse.diffusion.schedule import (
    ZERO_SNR_SIGMA_FACTOR,
    rescale_zero_terminal_snr,
    timestep_grid,
)
from inkfuse.errors import ConfigError

pytestmark = pytest.mark.usefixtures("one_thread")

MU, S = torch.tensor([0.5, -0.25, 0.0, 1.0]), 0.5


class Gaussian:
    """The exact denoiser of x_0 ~ N(μ, s² I) (as in tests/diffusion/test_samplers.py): with
    x_t = a x_0 + b ε, E[x_0 | x_t] = μ + a s² (x_t − a μ) / (a² s² + b²); at a = 0, μ."""

    def __init__(self, schedule: Schedule):
        self.schedule = schedule

    def __call__(self, x, t, cond=None):
        a, b = coefficients(self.schedule, t, x)
        x0 = MU + a * S**2 * (x - a * MU) / (a**2 * S**2 + b**2)
        return Prediction(x0, (x - a * x0) / b)


def noise(n: int = 4096) -> torch.Tensor:
    return torch.randn(n, len(MU), generator=torch.Generator().manual_seed(0))


def betas_of(alphas_cumprod: list[float]) -> torch.Tensor:
    ab = torch.tensor(alphas_cumprod, dtype=torch.float64)
    return 1 - torch.cat([ab[:1], ab[1:] / ab[:-1]])


def test_rescaling_matches_algorithm_1_by_hand():
    # sqrt(ᾱ) = 0.8, 0.6, 0.4, 0.2 -> (sqrt(ᾱ) − 0.2) · 0.8 / 0.6 = 0.8, 8/15, 4/15, 0
    betas = rescale_zero_terminal_snr(betas_of([0.64, 0.36, 0.16, 0.04]))
    ab = torch.cumprod(1 - betas, 0)
    expected = torch.tensor([0.64, 64 / 225, 16 / 225, 0.0], dtype=torch.float64)
    assert torch.allclose(ab, expected, rtol=1e-12, atol=0)
    assert betas[-1].item() == 1.0 and ab[-1].item() == 0.0


@pytest.mark.parametrize("kind", ["linear", "cosine", "sigmoid"])
@pytest.mark.parametrize("T", [2, 150, 1000])
def test_last_alpha_bar_is_zero_and_first_unchanged(kind, T):
    plain, zero = Schedule(kind, T), Schedule(kind, T, zero_terminal_snr=True)
    assert zero.alphas_cumprod[-1].item() == 0.0 and zero.alphas[-1].item() == 0.0
    assert zero.alphas_cumprod[0].item() == pytest.approx(plain.alphas_cumprod[0].item(),
                                                          rel=1e-6)
    assert (zero.alphas_cumprod[1:] < zero.alphas_cumprod[:-1]).all()
    # the σ view stays finite and increasing, its last value capped above σ_{T−2}
    assert torch.isfinite(zero.sigmas).all() and (zero.log_sigmas.diff() > 0).all()
    cap = ZERO_SNR_SIGMA_FACTOR * max(zero.sigmas[-2].item(), 1.0)
    assert zero.sigmas[-1].item() == pytest.approx(cap, rel=1e-6)
    t = torch.tensor([0.0, T - 1.5, T - 1.0]) if T > 2 else torch.tensor([0.0, 0.5, 1.0])
    assert torch.isfinite(zero.sigma(t)).all() and torch.isfinite(zero.alpha_bar(t)).all()
    assert (zero.alpha_bar(torch.tensor(T - 1)) == 0).all()  # integer steps: exact


def test_ddpm_course_schedule_keeps_a_fifth_of_the_signal_without_it():
    """The number its recipe quotes: linear β 1e-4..0.02 over 150 steps."""
    plain = Schedule("linear", 150, 1e-4, 0.02)
    exact = math.prod(1 - (1e-4 + i * (0.02 - 1e-4) / 149) for i in range(150))
    assert plain.alphas_cumprod[-1].item() == pytest.approx(exact, rel=1e-5)
    assert plain.alphas_cumprod[-1].item() == pytest.approx(0.2192, abs=1e-4)
    zero = Schedule("linear", 150, 1e-4, 0.02, zero_terminal_snr=True)
    assert zero.alphas_cumprod[-1].item() == 0.0


def test_a_schedule_already_at_zero_before_its_end_is_refused():
    with pytest.raises(ConfigError, match="reaches ᾱ = 0 before its last step"):
        Schedule("linear", 100_000, zero_terminal_snr=True)


@pytest.mark.parametrize("name", ["ddpm", "ddim", "dpmpp-2m", "unipc", "euler", "heun",
                                  "dpmpp-2m-sde", "restart"])
def test_samplers_from_pure_noise_reach_gaussian_data(name):
    """On the ddpm-course schedule every sampler starts from N(0, I) at grid[0]: wrong by a fifth
    of the signal there, exact with the rescaling. The trailing grid (ddpm, ddim, dpmpp-2m,
    unipc) starts at t = T − 1, where σ = ∞ is capped; the Karras grid at EDM's σ = 80."""
    steps = {"ddpm": 150, "ddim": 150, "euler": 100, "dpmpp-2m-sde": 100}.get(name, 30)
    errors = {}
    for zero in (False, True):
        schedule = Schedule("linear", 150, 1e-4, 0.02, zero_terminal_snr=zero)
        grid = timestep_grid(schedule, steps, SAMPLERS[name].spacing)
        out = SAMPLERS[name](Gaussian(schedule), noise(), grid,
                             generator=torch.Generator().manual_seed(1))
        assert torch.isfinite(out).all()
        errors[zero] = (out.mean(0) - MU).abs().max().item()
        z = (out - MU) / S
        if zero:
            assert abs(z.var().item() - 1) < 0.08, name  # ddpm: O(1/steps) ancestral bias
    assert errors[True] < 0.035 < 0.06 < errors[False], errors


def test_an_eps_target_is_refused_with_it():
    with pytest.raises(ConfigError, match=r"zero_terminal_snr = true .* set diffusion.target"):
        load_recipe("ddpm-course", ["diffusion.zero_terminal_snr=true"])
    config = load_recipe("ddpm-course", ["diffusion.zero_terminal_snr=true",
                                         "diffusion.target='v'"])
    assert Schedule.of(config.diffusion).alphas_cumprod[-1].item() == 0.0
    assert Schedule.of(load_recipe("ddpm-course").diffusion).alphas_cumprod[-1].item() > 0.2


def test_a_tiny_run_with_it_trains_and_samples_finite_images(tmp_path, tiny_overrides):
    config = load_recipe("shapes", [*tiny_overrides, "diffusion.zero_terminal_snr=true",
                                    "diffusion.target='v'"])
    run_dir = inkfuse.train(config, tmp_path / "run", progress=False)
    run = pipelines.load_run(run_dir)
    assert run.schedule.alphas_cumprod[-1].item() == 0.0  # the run's schedule, not a default
    for sampler in ("ddim", "ddpm", "dpmpp-2m", "unipc", "euler", "heun"):
        x = pipelines.sample(run, 4, sampler=sampler, steps=5, seed=0, progress=False)
        assert torch.isfinite(x).all() and x.abs().max() <= 1, sampler
