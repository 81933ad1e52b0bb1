"""Imagen's dynamic thresholding and static clipping of the guided x̂0, by hand."""

from __future__ import annotations

import pytest
import torch

from inkfuse.config import load_recipe
from inkfuse.diffusion import Prediction, Schedule, threshold
from inkfuse.diffusion.denoiser import coefficients
from inkfuse.diffusion.thresholding import dynamic_threshold
from inkfuse.errors import ConfigError


def test_dynamic_threshold_by_hand():
    # sample 0 stays inside [-1, 1]: untouched; sample 1 overshoots to 4: s = its |x0| quantile
    x0 = torch.tensor([[0.5, -0.25, 1.0, 0.0], [4.0, -2.0, 1.0, 0.0]])
    out = dynamic_threshold(x0, 0.5)
    assert torch.equal(out[0], x0[0])
    s = torch.quantile(torch.tensor([4.0, 2.0, 1.0, 0.0]), 0.5)  # 1.5
    assert torch.allclose(out[1], x0[1].clamp(-s, s) / s)
    assert torch.allclose(out[1], torch.tensor([1.0, -1.0, 1 / 1.5, 0.0]))
    assert dynamic_threshold(x0, 1.0)[1].abs().max() == 1.0  # p = 1: divide by the max


@pytest.mark.parametrize("mode", ["static", "dynamic"])
def test_thresholding_keeps_x_t_consistent_and_x0_in_range(mode):
    schedule = Schedule("cosine", 100)
    x = torch.randn(3, 2, 4, 4)
    t = torch.tensor([10, 50, 90])

    def overshooting(x, t, cond=None):  # a guided prediction far outside [-1, 1]
        a, s = coefficients(schedule, t, x)
        x0 = 3 * torch.randn_like(x)
        return Prediction(x0, (x - a * x0) / s)

    pred = threshold(overshooting, schedule, mode, 0.9)(x, t)
    assert pred.x0.abs().max() <= 1 + 1e-6
    a, s = coefficients(schedule, t, x)
    assert torch.allclose(a * pred.x0 + s * pred.eps, x, atol=1e-5)


def test_none_is_the_denoiser_itself_and_latent_recipes_refuse_it():
    def f(x, t, cond=None):
        return Prediction(x, x)

    assert threshold(f, Schedule("cosine", 10), "none") is f
    with pytest.raises(ConfigError, match="pixel models"):
        load_recipe("shapes-latent", ["sample.thresholding='dynamic'"])
