import pytest
import torch

from inkfuse.diffusion import Condition, Denoiser, Schedule
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

    def forward(self, x, t, **cond):
        a, b = coefficients(self.schedule, t, x)
        self.eps = (x - a * self.x0) / b
        return training_target(self.target, self.x0, self.eps, a, b)


@pytest.mark.parametrize("target", ["eps", "x0", "v"])
def test_loss_is_zero_for_the_true_target(target):
    s = Schedule("linear", 100)
    net = Oracle(s, target)
    net.x0 = torch.randn(8, 1, 4, 4)
    loss = Denoiser(net, s, target).loss(net.x0, None, weighting="min-snr")
    assert loss.item() == pytest.approx(0.0, abs=1e-6)


class Constant(torch.nn.Module):
    """Outputs 0.5 everywhere and records what it was called with."""

    def forward(self, x, t, **cond):
        self.x, self.t, self.cond = x, t, cond
        return torch.full_like(x, 0.5)


@pytest.mark.parametrize("weighting", ["none", "min-snr"])
@pytest.mark.parametrize("target", ["eps", "x0", "v"])
def test_loss_is_the_weighted_mse_of_the_target(target, weighting):
    """By hand: t drawn first, then ε, from the one generator; x_t = √ᾱ x0 + √(1−ᾱ) ε; the
    target ε, x0 or v = √ᾱ ε − √(1−ᾱ) x0; min-SNR weights min(SNR, γ) in x0 space, i.e.
    min(SNR, γ)/SNR on an ε-MSE and min(SNR, γ)/(SNR + 1) on a v-MSE."""
    s, net, gamma = Schedule("cosine", 100), Constant(), 2.0
    x0 = torch.randn(6, 2, 3, 3, generator=torch.Generator().manual_seed(1))
    loss = Denoiser(net, s, target).loss(x0, None, weighting=weighting, gamma=gamma,
                                         generator=torch.Generator().manual_seed(7))

    g = torch.Generator().manual_seed(7)
    t = torch.randint(0, 100, (6,), generator=g)
    eps = torch.randn(x0.shape, generator=g)
    ab = s.alpha_bar(t).float()[:, None, None, None]
    assert torch.equal(net.t, t) and net.cond == {}
    torch.testing.assert_close(net.x, ab.sqrt() * x0 + (1 - ab).sqrt() * eps)
    want = {"eps": eps, "x0": x0, "v": ab.sqrt() * eps - (1 - ab).sqrt() * x0}[target]
    mse = (0.5 - want).pow(2).mean(dim=(1, 2, 3))
    snr = (ab / (1 - ab)).flatten()
    weight = torch.ones(6) if weighting == "none" else {
        "x0": snr.clamp(max=gamma), "eps": snr.clamp(max=gamma) / snr,
        "v": snr.clamp(max=gamma) / (snr + 1)}[target]
    torch.testing.assert_close(loss, (weight * mse).mean())


def test_denoiser_clips_x0_and_keeps_eps_consistent():
    s = Schedule("cosine", 100)
    net = lambda x, t: torch.full_like(x, 5.0)  # noqa: E731  (x0-prediction far out of range)
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


def test_a_class_condition_reaches_the_network_with_its_drop_mask():
    """Class models learn their null: the Denoiser hands over vector and drop untouched."""
    net, c = Constant(), Condition.from_labels(torch.tensor([0, 2]), 3).dropped(1.0)
    Denoiser(net, Schedule("cosine", 10))(torch.zeros(2, 1, 2, 2), torch.tensor(4), c)
    assert set(net.cond) == {"vector", "drop"} and net.cond["drop"].all()
    assert torch.equal(net.cond["vector"], c.vector) and torch.equal(net.t, torch.tensor([4, 4]))


def empty_prompt(length: int) -> Condition:
    """A one-row null: pooled vector of 9s, `length` tokens of which the first 2 are real."""
    mask = torch.zeros(1, length, dtype=torch.bool)
    mask[:, :2] = True
    tokens = torch.arange(1.0, length + 1).reshape(1, length, 1).expand(1, length, 3)
    return Condition(torch.full((1, 2), 9.0), torch.zeros(1, dtype=torch.bool), tokens, mask)


def text_batch() -> Condition:
    """Two prompts padded to 4 tokens; row 1 dropped; a low-res image that is never dropped."""
    mask = torch.tensor([[True, True, True, False], [True, True, True, True]])
    return Condition(torch.ones(2, 2), torch.tensor([False, True]), torch.full((2, 4, 3), -1.0),
                     mask, low_res=torch.zeros(2, 1, 2, 2), low_res_t=torch.tensor([3, 5]))


@pytest.mark.parametrize("null_length", [3, 6])  # shorter than the batch's 4 tokens, and longer
def test_dropped_rows_become_the_empty_prompt_fitted_to_the_token_length(null_length):
    got = text_batch().with_null(empty_prompt(null_length))
    n = min(null_length, 4)
    want_tokens = torch.zeros(4, 3)
    want_tokens[:n] = torch.arange(1.0, n + 1)[:, None]
    assert not got.drop.any() and got.tokens.shape == (2, 4, 3)
    assert torch.equal(got.vector, torch.tensor([[1.0, 1.0], [9.0, 9.0]]))
    assert torch.equal(got.tokens[0], torch.full((4, 3), -1.0))  # kept row untouched
    assert torch.equal(got.tokens[1], want_tokens)  # null zero-padded or cut to 4 tokens
    assert got.mask[0].tolist() == [True, True, True, False]
    assert got.mask[1].tolist() == [True, True, False, False]
    assert torch.equal(got.low_res_t, torch.tensor([3, 5])) and got.low_res is not None


def test_the_denoiser_applies_the_null_in_loss_and_sampling_alike():
    net, null = Constant(), empty_prompt(4)
    den = Denoiser(net, Schedule("cosine", 10), "eps", null=null)
    x, cond = torch.zeros(2, 1, 2, 2), text_batch()
    want = cond.with_null(null).inputs()
    for run in (lambda: den(x, torch.tensor([1, 2]), cond), lambda: den.loss(x, cond)):
        run()
        assert "drop" not in net.cond  # every row holds a prompt: nothing left to drop
        assert set(net.cond) == set(want) - {"drop"}
        assert all(torch.equal(net.cond[k], want[k]) for k in net.cond)
    den(x, torch.tensor([1, 2]), None)  # an unconditional call: the empty prompt in every row
    assert torch.equal(net.cond["tokens"], null.tokens.expand(2, 4, 3))
    assert torch.equal(net.cond["vector"], torch.full((2, 2), 9.0))
    assert "low_res" not in net.cond
