import pytest
import torch

from inkfuse.diffusion import Condition, Denoiser, Schedule, diffusion_loss
from inkfuse.diffusion.denoiser import coefficients, to_prediction, training_target


@pytest.mark.parametrize("target", ["eps", "x0", "v"])
def test_targets_convert_back_to_x0_and_eps(target):
    s = Schedule("cosine", 100)
    g = torch.Generator().manual_seed(0)
    x0, eps = torch.randn(4, 2, 3, 3, generator=g), torch.randn(4, 2, 3, 3, generator=g)
    t = torch.tensor([1, 20, 50, 90])  # at t = 99 sqrt(ᾱ) ≈ 5e-4 and x0 = (x - sε)/a is ill-posed
    a, b = coefficients(s, t, x0)
    x = a * x0 + b * eps
    pred = to_prediction(target, training_target(target, x0, eps, a, b), x, a, b)
    assert torch.allclose(pred.x0, x0, atol=1e-4) and torch.allclose(pred.eps, eps, atol=1e-4)


class Oracle(torch.nn.Module):
    """Returns the true target, so the loss must be exactly zero."""

    def __init__(self, schedule, target):
        super().__init__()
        self.schedule, self.target, self.x0, self.eps = schedule, target, None, None

    def forward(self, x, t, cond):
        a, b = coefficients(self.schedule, t, x)
        self.eps = (x - a * self.x0) / b
        return training_target(self.target, self.x0, self.eps, a, b)


@pytest.mark.parametrize("target", ["eps", "x0", "v"])
def test_loss_is_zero_for_the_true_target(target):
    s = Schedule("linear", 100)
    net = Oracle(s, target)
    net.x0 = torch.randn(8, 1, 4, 4)
    loss = diffusion_loss(net, s, net.x0, None, target=target, weighting="min-snr")
    assert loss.item() == pytest.approx(0.0, abs=1e-6)


def test_denoiser_clips_x0_and_keeps_eps_consistent():
    s = Schedule("cosine", 100)
    net = lambda x, t, c: torch.full_like(x, 5.0)  # noqa: E731  (x0-prediction far out of range)
    d = Denoiser(net, s, "x0", clip=1.0)
    x, t = torch.randn(2, 1, 2, 2), torch.tensor([10, 90])
    pred = d(x, t)
    a, b = coefficients(s, t, x)
    assert pred.x0.max() == 1.0 and torch.allclose(a * pred.x0 + b * pred.eps, x, atol=1e-5)


def test_condition_dropping_and_null():
    c = Condition.from_labels(torch.tensor([0, 1, 2, 1]), 3)
    assert torch.equal(c.vector.argmax(1), torch.tensor([0, 1, 2, 1]))
    assert c.null_like().drop.all() and not c.drop.any()
    g = torch.Generator().manual_seed(0)
    frac = Condition.from_labels(torch.zeros(10000, dtype=torch.long), 3).dropped(0.1, g).drop
    assert frac.float().mean().item() == pytest.approx(0.1, abs=0.01)
