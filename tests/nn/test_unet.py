import pytest
import torch

from inkfuse.config import ModelConfig
from inkfuse.diffusion import Condition
from inkfuse.nn import UNet
from inkfuse.nn.blocks import (
    NearestUpConv,
    RearrangePool,
    SinusoidalEmbedding,
    conv_plus_pointwise,
    modulated_norm,
)

VARIANTS = [
    {},
    {"kind": "plain-unet", "cond_dim": 0},
    {"norm": "batch", "activation": "relu", "down": "maxpool", "up": "transposed",
     "time_embedding": "linear", "residual": False},
    {"activation": "gelu", "down": "stride", "attention_resolutions": [8, 4], "blocks_per_level": 2,
     "dropout": 0.1},
]


@pytest.mark.parametrize("overrides", VARIANTS)
def test_every_switch_builds_and_keeps_the_shape(overrides):
    cfg = ModelConfig(**{"in_channels": 3, "cond_dim": 4, "base_channels": 16,
                         "channel_mult": [1, 2, 2], **overrides})
    net = UNet(cfg, 16, 100)
    x = torch.randn(2, 3, 16, 16)
    cond = Condition.from_labels(torch.tensor([0, 3]), 4) if cfg.cond_dim else None
    out = net(x, torch.tensor([1, 99]), **(cond.inputs() if cond else {}))
    assert out.shape == x.shape
    out.square().mean().backward()
    assert all(p.grad is not None for p in net.parameters() if p.requires_grad)


def test_condition_and_time_change_the_output():
    torch.manual_seed(0)
    net = UNet(ModelConfig(in_channels=1, cond_dim=3, base_channels=8, channel_mult=[1, 2],
                           groups=4), 8, 100)
    for p in net.parameters():  # zero-initialised layers would hide the inputs' effect
        torch.nn.init.normal_(p, std=0.1)
    x, t = torch.randn(1, 1, 8, 8), torch.tensor([10])
    cond = Condition.from_labels(torch.tensor([0]), 3)
    c, dropped = cond.inputs(), cond.null_like().inputs()
    other = Condition.from_labels(torch.tensor([1]), 3).inputs()
    assert not torch.allclose(net(x, t, **c), net(x, t, **other))
    assert not torch.allclose(net(x, t, **c), net(x, t, **dropped))
    assert not torch.allclose(net(x, t, **c), net(x, torch.tensor([90]), **c))


def test_dropped_rows_and_unconditional_calls_read_the_learned_null():
    torch.manual_seed(0)
    net = UNet(ModelConfig(in_channels=1, cond_dim=3, base_channels=8, channel_mult=[1, 2],
                           groups=4), 8, 100).eval()
    for p in net.parameters():
        torch.nn.init.normal_(p, std=0.1)
    x, t = torch.randn(3, 1, 8, 8), torch.tensor([10, 40, 80])
    vector = torch.eye(3)
    with torch.no_grad():
        unconditional = net(x, t)  # no vector: every row the learned null
        mixed = net(x, t, vector=vector, drop=torch.tensor([True, False, True]))
        kept = net(x, t, vector=vector)  # no drop mask: nothing dropped
    torch.testing.assert_close(mixed[[0, 2]], unconditional[[0, 2]])
    torch.testing.assert_close(mixed[1], kept[1])
    assert not torch.allclose(mixed[1], unconditional[1])


def test_channels_last_matches_contiguous():
    torch.manual_seed(0)
    net = UNet(ModelConfig(in_channels=3, cond_dim=0, base_channels=16,
                           attention_resolutions=[8]), 16, 100).eval()
    x, t = torch.randn(2, 3, 16, 16), torch.tensor([5, 50])
    ref = net(x, t)
    cl = torch.channels_last
    fast = net.to(memory_format=cl)(x.contiguous(memory_format=cl), t)
    assert torch.allclose(ref, fast, atol=1e-5)


def test_rearrange_pool_keeps_every_pixel():
    pool = RearrangePool(2)
    x = torch.arange(2 * 4 * 4, dtype=torch.float32).view(1, 2, 4, 4)
    from einops import rearrange

    patches = rearrange(x, "b c (h p) (w q) -> b (c p q) h w", p=2, q=2)
    assert patches.shape == (1, 8, 2, 2) and set(patches.flatten().tolist()) == set(range(32))
    assert pool(x).shape == (1, 2, 2, 2)


def test_nearest_up_conv_is_upsample_then_conv():
    """The transposed-conv form gives the same outputs and gradients as the two-step form."""
    torch.manual_seed(0)
    up = NearestUpConv(5, 3).double()
    torch.nn.init.normal_(up.conv.bias)
    x = torch.randn(2, 5, 3, 4, dtype=torch.float64, requires_grad=True)
    fast = up(x)
    ref = up.conv(torch.nn.functional.interpolate(x, scale_factor=2, mode="nearest"))
    assert fast.shape == (2, 3, 6, 8) and torch.allclose(fast, ref)
    g = torch.randn_like(ref)
    grads = [torch.autograd.grad(y, (x, up.conv.weight, up.conv.bias), g) for y in (fast, ref)]
    assert all(torch.allclose(a, b) for a, b in zip(*grads, strict=True))


def test_modulated_group_norm_is_norm_then_scale_and_shift():
    """The one-call form gives the outputs and gradients of norm(h) * (1 + scale) + shift."""
    torch.manual_seed(0)
    norm = torch.nn.GroupNorm(4, 8).double()
    torch.nn.init.normal_(norm.weight)
    torch.nn.init.normal_(norm.bias)
    h, scale, shift = (torch.randn(*shape, dtype=torch.float64, requires_grad=True)
                       for shape in ((3, 8, 5, 5), (3, 8), (3, 8)))
    fast = modulated_norm(norm, h, scale, shift)
    ref = norm(h) * (1 + scale[:, :, None, None]) + shift[:, :, None, None]
    assert torch.allclose(fast, ref)
    g, inputs = torch.randn_like(ref), (h, scale, shift, norm.weight, norm.bias)
    grads = [torch.autograd.grad(y, inputs, g) for y in (fast, ref)]
    assert all(torch.allclose(a, b) for a, b in zip(*grads, strict=True))


@pytest.mark.parametrize("memory", [torch.contiguous_format, torch.channels_last])
def test_conv_plus_pointwise_is_the_two_convs_summed(memory):
    """The matmul form of the 1×1 skip conv (and the channels-last fallback) gives the outputs
    and gradients of conv(h) + pointwise(x)."""
    torch.manual_seed(0)
    conv, skip = torch.nn.Conv2d(4, 4, 3, padding=1).double(), torch.nn.Conv2d(6, 4, 1).double()
    h, x = (torch.randn(2, c, 5, 3, dtype=torch.float64).contiguous(memory_format=memory)
            .requires_grad_() for c in (4, 6))
    fast, ref = conv_plus_pointwise(conv, h, skip, x), conv(h) + skip(x)
    assert torch.allclose(fast, ref)
    g, inputs = torch.randn_like(ref), (h, x, conv.weight, conv.bias, skip.weight, skip.bias)
    grads = [torch.autograd.grad(y, inputs, g) for y in (fast, ref)]
    assert all(torch.allclose(a, b) for a, b in zip(*grads, strict=True))


def test_sinusoidal_embedding_distinguishes_steps():
    emb = SinusoidalEmbedding(32)(torch.tensor([0.0, 1.0, 500.0]))
    assert emb.shape == (3, 32) and torch.allclose(emb[0, 16:], torch.ones(16))
    assert (emb[1] - emb[2]).abs().sum() > 1
