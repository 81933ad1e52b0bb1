"""The U-Net's text inputs: cross-attention ignores padding, dropped rows read the empty prompt."""

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
    null_mask = torch.tensor([True, True, False, False, False])
    net.set_null_text(torch.randn(K), torch.randn(L, W), null_mask)
    return net.eval()


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
        torch.testing.assert_close(net(x, t, short), net(x, t, longer))
        unmasked = Condition(short.vector, short.drop, short.tokens, torch.ones_like(short.mask))
        assert not torch.allclose(net(x, t, short), net(x, t, unmasked))


@pytest.mark.parametrize("mode", ["pooled", "cross-attention", "both"])
def test_dropped_rows_read_the_empty_prompt(mode):
    net = text_net(mode)
    x, t = torch.randn(3, 3, 8, 8), torch.tensor([5, 50, 90])
    cond = text_cond(3, 4)
    with torch.no_grad():
        dropped = net(x, t, cond.null_like())
        empty = Condition(net.null_vector.expand(3, K), torch.zeros(3, dtype=torch.bool),
                          net.null_tokens.expand(3, L, W), net.null_mask.expand(3, L))
        torch.testing.assert_close(dropped, net(x, t, empty))
        torch.testing.assert_close(dropped, net(x, t, None))  # unconditional call: same thing
        assert not torch.allclose(dropped, net(x, t, cond))
        half = Condition(cond.vector, torch.tensor([True, False, True]), cond.tokens, cond.mask)
        mixed = net(x, t, half)
        torch.testing.assert_close(mixed[[0, 2]], dropped[[0, 2]])
        torch.testing.assert_close(mixed[1], net(x, t, cond)[1])


def test_text_unet_needs_its_null_condition():
    cfg = ModelConfig(in_channels=3, cond_dim=K, base_channels=16, channel_mult=[1, 2],
                      null_condition="empty-prompt")
    with pytest.raises(RuntimeError, match="set_null_text"):
        UNet(cfg, 8, 100)(torch.randn(1, 3, 8, 8), torch.tensor([1]), None)


def test_cfg_weights_one_and_zero_are_the_two_branches():
    net = text_net("both")
    den = Denoiser(net, Schedule("cosine", 100), "eps", clip=None)
    x, t = torch.randn(2, 3, 8, 8), torch.tensor([20, 70])
    cond = text_cond(2, 4)
    with torch.no_grad():
        torch.testing.assert_close(cfg(den, 1.0)(x, t, cond).eps, den(x, t, cond).eps)
        torch.testing.assert_close(cfg(den, 0.0)(x, t, cond).eps, den(x, t, None).eps)
