"""Learned variance (L_hybrid, Nichol & Dhariwal 2021): the interpolated step variance, the
variational term of the loss by hand, its gradient reaching only the variance, DDPM stepping
with it, and a tiny run trained, sampled and scored with it."""

from __future__ import annotations

import math

import torch

from inkfuse.config import load_recipe
from inkfuse.diffusion import Denoiser, Prediction, Schedule
from inkfuse.diffusion.denoiser import step_variance
from inkfuse.diffusion.gaussian import normal_kl
from inkfuse.diffusion.samplers.ddpm import ddpm_step


def test_the_step_variance_lies_between_the_posterior_and_beta():
    ab_t, ab_prev = torch.tensor(0.5), torch.tensor(0.8)
    beta = 1 - 0.5 / 0.8
    tilde = beta * (1 - 0.8) / (1 - 0.5)
    assert torch.isclose(step_variance(ab_t, ab_prev, None), torch.tensor(tilde))
    assert torch.isclose(step_variance(ab_t, ab_prev, torch.tensor(0.0)), torch.tensor(tilde))
    assert torch.isclose(step_variance(ab_t, ab_prev, torch.tensor(1.0)), torch.tensor(beta))
    assert torch.isclose(step_variance(ab_t, ab_prev, torch.tensor(0.5)),
                         torch.tensor(math.sqrt(beta * tilde)))
    # the decoder's step (to ᾱ = 1): the posterior is a point, both ends are β
    assert torch.isclose(step_variance(ab_t, torch.tensor(1.0), torch.tensor(0.3)),
                         torch.tensor(0.5))


class Fixed(torch.nn.Module):
    """A 'network' whose output is a parameter: gradients of the loss land on it directly."""

    def __init__(self, out: torch.Tensor):
        super().__init__()
        self.out = torch.nn.Parameter(out.clone())

    def forward(self, x, t, **kwargs):
        return self.out


def test_the_variational_term_trains_only_the_variance():
    torch.manual_seed(0)
    schedule = Schedule("cosine", 100)
    x0 = torch.rand(4, 3, 8, 8) * 2 - 1
    out = torch.randn(4, 6, 8, 8)
    hybrid = Fixed(out)
    simple = Fixed(out[:, :3])
    loss_h = Denoiser(hybrid, schedule, learn_variance=True).loss(
        x0, None, generator=torch.Generator().manual_seed(1))
    loss_s = Denoiser(simple, schedule).loss(x0, None, generator=torch.Generator().manual_seed(1))
    loss_h.backward()
    loss_s.backward()
    assert loss_h > loss_s  # the bound's term is added
    assert torch.allclose(hybrid.out.grad[:, :3], simple.out.grad, atol=1e-7)  # mean: L_simple
    assert hybrid.out.grad[:, 3:].abs().sum() > 0  # the variance learns from L_vlb


def test_the_variational_term_by_hand():
    schedule = Schedule("linear", 50)
    d = Denoiser(Fixed(torch.zeros(1)), schedule, learn_variance=True)
    x0 = torch.tensor([0.5, -0.25]).reshape(1, 2, 1, 1).repeat(2, 1, 1, 1)
    x0_hat = torch.tensor([0.4, -0.1]).reshape(1, 2, 1, 1).repeat(2, 1, 1, 1)
    frac = torch.full_like(x0, 0.25)
    t = torch.tensor([10, 10])
    x_t = torch.zeros_like(x0)  # the KL does not depend on x_t: both means share its term
    got = d.vlb_term(x0, x_t, t, x0_hat, frac)
    ab, prev = schedule.alpha_bar(torch.tensor(10)), schedule.alpha_bar(torch.tensor(9))
    beta = 1 - ab / prev
    tilde = beta * (1 - prev) / (1 - ab)
    var = torch.exp(0.25 * beta.log() + 0.75 * tilde.log())
    c0 = prev.sqrt() * beta / (1 - ab)
    kl = 0.5 * (torch.log(var / tilde) + (tilde + (c0 * (x0 - x0_hat)) ** 2) / var - 1)
    assert torch.allclose(got, kl.flatten(1).mean(1) / math.log(2), rtol=1e-5)
    assert torch.allclose(normal_kl(c0 * x0, tilde, c0 * x0_hat, var), kl, rtol=1e-5)


def test_ddpm_steps_with_the_learned_variance():
    x, z = torch.randn(2, 3, 4, 4), torch.randn(2, 3, 4, 4)
    ab_t, ab_prev = torch.tensor(0.3), torch.tensor(0.6)
    pred = Prediction(torch.zeros_like(x), torch.zeros_like(x), torch.ones_like(x))
    mean = ddpm_step(x, pred, ab_t, ab_prev, None)
    beta = 1 - ab_t / ab_prev
    assert torch.allclose(ddpm_step(x, pred, ab_t, ab_prev, z), mean + beta.sqrt() * z)


def test_a_tiny_run_learns_its_variance_and_is_sampled_and_scored(tmp_path, tiny_overrides):
    from inkfuse.artifacts.run import load_run
    from inkfuse.metrics.evaluation import evaluate
    from inkfuse.pipelines import sample
    from inkfuse.train import train

    config = load_recipe("shapes", [*tiny_overrides, "diffusion.learn_variance=true"])
    run = load_run(train(config, tmp_path / "run", progress=False))
    assert run.config.model.out_channels == 6
    images = sample(run, 4, sampler="ddpm", steps=5, progress=False)
    assert images.shape == (4, 3, 16, 16) and torch.isfinite(images).all()
    scores = evaluate(run, "bpd", n=4, progress=False, bpd_estimators=("vlb",),
                      bpd_t_samples=2)
    assert math.isfinite(scores["bpd_vlb"])
