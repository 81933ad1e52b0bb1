"""The U-Net's text inputs: cross-attention ignores padding; dropped rows read the empty prompt,
which the Denoiser writes in, since the network sees only tensors."""

import pytest
import torch

from inkfuse.config import ModelConfig
from inkfuse.diffusion import Condition, Denoiser, Schedule, cfg
from inkfuse.nn import UNet

K, W, L = 6, 12, 5


def text_net(mode: str) -> UNet:
    torch.manual_seed(0)
    cfg = ModelConfig(in_channels=3, base_channels=16, channel_mult=[1, 2],
                      attention_resolutions=[4], head_dim=8, null_condition="empty-prompt",
                      cond_dim=K if mode != "cross-attention" else 0,
                      token_dim=W if mode != "pooled" else 0)
    net = UNet(cfg, 8, 100)
    for p in net.parameters():  # zero-initialised output layers would hide every input
        torch.nn.init.normal_(p, std=0.1)
    return net.eval()


def empty_prompt(mode: str) -> Condition:
    """A stand-in for the text encoder's empty prompt (one row): 2 real tokens of L."""
    torch.manual_seed(2)
    mask = torch.tensor([[True, True, False, False, False]])
    return Condition(torch.randn(1, K) if mode != "cross-attention" else None,
                     torch.zeros(1, dtype=torch.bool),
                     torch.randn(1, L, W) if mode != "pooled" else None,
                     mask if mode != "pooled" else None)


def text_cond(b: int, real: int, length: int = L, pad_value: float = 0.0) -> Condition:
    torch.manual_seed(1)
    tokens = torch.full((b, length, W), pad_value)
    tokens[:, :real] = torch.randn(b, real, W)
    mask = torch.zeros(b, length, dtype=torch.bool)
    mask[:, :real] = True
    return Condition(torch.randn(b, K), torch.zeros(b, dtype=torch.bool), tokens, mask)


def test_cross_attention_ignores_padding():
    net = text_net("cross-attention")
    x, t = torch.randn(2, 3, 8, 8), torch.tensor([5, 50])
    short = text_cond(2, 3)
    longer = text_cond(2, 3, length=9, pad_value=7.0)  # more padding, and garbage in it
    with torch.no_grad():
        out = net(x, t, tokens=short.tokens, mask=short.mask)
        torch.testing.assert_close(out, net(x, t, tokens=longer.tokens, mask=longer.mask))
        unmasked = net(x, t, tokens=short.tokens, mask=torch.ones_like(short.mask))
        assert not torch.allclose(out, unmasked)


@pytest.mark.parametrize("mode", ["pooled", "cross-attention", "both"])
def test_dropped_rows_read_the_empty_prompt(mode):
    net, null = text_net(mode), empty_prompt(mode)
    den = Denoiser(net, Schedule("cosine", 100), "eps", clip=None, null=null)
    x, t = torch.randn(3, 3, 8, 8), torch.tensor([5, 50, 90])
    cond = text_cond(3, 4)
    if mode == "pooled":
        cond = Condition(cond.vector, cond.drop)
    elif mode == "cross-attention":
        cond = Condition(None, cond.drop, cond.tokens, cond.mask)
    with torch.no_grad():
        dropped = den(x, t, cond.null_like()).eps
        empty = null.expand(3)  # the network itself, given the empty prompt in every row
        direct = net(x, t, vector=empty.vector, tokens=empty.tokens, mask=empty.mask)
        torch.testing.assert_close(dropped, direct)
        torch.testing.assert_close(dropped, den(x, t, None).eps)  # unconditional: the same
        assert not torch.allclose(dropped, den(x, t, cond).eps)
        half = Condition(cond.vector, torch.tensor([True, False, True]), cond.tokens, cond.mask)
        mixed = den(x, t, half).eps
        torch.testing.assert_close(mixed[[0, 2]], dropped[[0, 2]])
        torch.testing.assert_close(mixed[1], den(x, t, cond).eps[1])


def test_text_unet_refuses_a_forgotten_null():
    """Without the empty prompt the network cannot honour a drop mask: an error, not a
    condition silently kept."""
    net = text_net("both")
    x, t, cond = torch.randn(2, 3, 8, 8), torch.tensor([1, 2]), text_cond(2, 3)
    den = Denoiser(net, Schedule("cosine", 100), "eps", clip=None)  # no null
    with pytest.raises(ValueError, match="no learned null"):
        den(x, t, cond.null_like())
    with pytest.raises(ValueError, match="empty prompt"):
        den(x, t, None)
    with pytest.raises(ValueError, match="tokens and mask"):
        net(x, t, vector=cond.vector)


def test_cfg_weights_one_and_zero_are_the_two_branches():
    net = text_net("both")
    den = Denoiser(net, Schedule("cosine", 100), "eps", clip=None, null=empty_prompt("both"))
    x, t = torch.randn(2, 3, 8, 8), torch.tensor([20, 70])
    cond = text_cond(2, 4)
    with torch.no_grad():
        torch.testing.assert_close(cfg(den, 1.0)(x, t, cond).eps, den(x, t, cond).eps)
        torch.testing.assert_close(cfg(den, 0.0)(x, t, cond).eps, den(x, t, None).eps)
