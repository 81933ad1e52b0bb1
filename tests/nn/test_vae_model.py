"""The autoencoder's shapes, its Gaussian posterior, and the scale factor that travels with it."""

from __future__ import annotations

import pytest
import torch

from inkfuse.config import VAEModelConfig
from inkfuse.nn.vae import AutoencoderKL, DiagonalGaussian


def tiny(**kw) -> AutoencoderKL:
    torch.manual_seed(0)
    return AutoencoderKL(VAEModelConfig(**{"in_channels": 3, "base_channels": 8, "groups": 4,
                                           **kw}))


@pytest.mark.parametrize(("factor", "levels"), [(4, 3), (8, 4)])
def test_encode_decode_shapes(factor: int, levels: int) -> None:
    vae = tiny(down_factor=factor, latent_channels=3, attention=True)
    assert len(vae.encoder.levels) == levels
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    posterior = vae.encode(x)
    side = 32 // factor
    assert posterior.mean.shape == posterior.logvar.shape == (2, 3, side, side)
    assert vae.latent_shape(32) == (3, side, side)
    assert vae.decode(posterior.sample()).shape == x.shape
    rec, post = vae(x)
    assert rec.shape == x.shape and post.kl().shape == (2,)


def test_padding_reaches_a_latent_grid_that_halves() -> None:
    """28 px Fashion-MNIST + 2 px of black each side = 32 px -> 8 x 8 latents, cropped back."""
    vae = tiny(in_channels=1, pad=2)
    x = torch.rand(2, 1, 28, 28) * 2 - 1
    z = vae.encode(x).mean
    assert z.shape == (2, 4, 8, 8) and vae.latent_shape(28) == (4, 8, 8)
    assert vae.decode(z).shape == x.shape
    with pytest.raises(ValueError, match="not divisible"):
        vae.encode(torch.zeros(1, 1, 30, 30))


def test_channel_mult_must_match_the_down_factor() -> None:
    with pytest.raises(ValueError, match="needs channel_mult with 4 entries"):
        tiny(down_factor=8, channel_mult=[1, 2, 2])
    assert VAEModelConfig(down_factor=8, base_channels=8).widths() == [8, 16, 32, 32]


def test_diagonal_gaussian() -> None:
    zero = torch.zeros(2, 4, 3, 3)
    assert torch.equal(DiagonalGaussian(zero, zero).kl(), torch.zeros(2))  # q = prior
    mean = torch.full((1, 1, 2, 2), 2.0)
    # KL(N(2, e^0) || N(0, 1)) = mean^2 / 2 = 2 per element, 4 elements
    assert DiagonalGaussian(mean, torch.zeros_like(mean)).kl().item() == pytest.approx(8.0)
    g = DiagonalGaussian(zero, torch.full_like(zero, -2.0))
    a = g.sample(torch.Generator().manual_seed(3))
    assert torch.equal(a, g.sample(torch.Generator().manual_seed(3)))
    assert a.std().item() == pytest.approx(torch.exp(torch.tensor(-1.0)).item(), rel=0.3)


def test_logvar_is_clamped() -> None:
    vae = tiny()
    with torch.no_grad():
        vae.encoder.out[-1].bias[4:].fill_(1e4)  # the logvar half of the output channels
    assert vae.encode(torch.zeros(1, 3, 16, 16)).logvar.max().item() == 20.0


def test_scale_factor_is_saved_with_the_weights() -> None:
    vae = tiny()
    vae.scale_factor.fill_(0.25)
    other = tiny()
    other.load_state_dict(vae.state_dict())
    assert other.scale_factor.item() == 0.25
