"""Every fast path gives the results of the plain one, within tolerance: bf16 autocast, channels
last, torch.compile, foreach/fused AdamW and SDPA attention. (Their speed is measured in
benchmarks/, never asserted here.)"""

import pytest
import torch
from torch import nn

import inkfuse
from inkfuse.config import ModelConfig, load_recipe
from inkfuse.diffusion import Condition, Denoiser, Schedule
from inkfuse.nn import build_model
from inkfuse.nn.blocks import Attention

pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_unet() -> nn.Module:
    """A 2-level U-Net with attention, every weight random (no zero-initialised shortcut)."""
    torch.manual_seed(0)
    net = build_model(ModelConfig(in_channels=3, cond_dim=4, base_channels=16,
                                  channel_mult=[1, 2], groups=4, attention_resolutions=[8],
                                  head_dim=8), 16, 100)
    for p in net.parameters():
        nn.init.normal_(p, std=0.1)
    return net


def loss_and_grads(net: nn.Module, x0: torch.Tensor, **autocast) -> tuple[torch.Tensor, list]:
    """The diffusion loss of a fixed batch (same t, noise and condition every call) and the
    gradient of every parameter."""
    cond = Condition.from_labels(torch.arange(len(x0)) % 4, 4)
    with torch.autocast("cpu", **autocast):
        loss = Denoiser(net, Schedule("cosine", 100)).loss(
            x0, cond, generator=torch.Generator().manual_seed(1))
    grads = torch.autograd.grad(loss, list(net.parameters()))
    return loss.detach(), [g.float() for g in grads]


def cosine(a: list, b: list) -> float:
    a, b = torch.cat([g.flatten() for g in a]), torch.cat([g.flatten() for g in b])
    return torch.nn.functional.cosine_similarity(a, b, dim=0).item()


def test_bf16_autocast_matches_fp32():
    net, x0 = tiny_unet(), torch.randn(8, 3, 16, 16)
    loss, grads = loss_and_grads(net, x0, enabled=False)
    loss16, grads16 = loss_and_grads(net, x0, dtype=torch.bfloat16)
    assert loss16.dtype == torch.float32
    assert torch.allclose(loss16, loss, rtol=0.02)
    assert cosine(grads16, grads) > 0.99


def test_channels_last_matches_contiguous_in_outputs_and_gradients():
    net, x0 = tiny_unet(), torch.randn(8, 3, 16, 16)
    loss, grads = loss_and_grads(net, x0, enabled=False)
    cl = torch.channels_last
    loss_cl, grads_cl = loss_and_grads(net.to(memory_format=cl), x0.contiguous(memory_format=cl),
                                       enabled=False)
    assert torch.allclose(loss_cl, loss, rtol=1e-5)
    assert all(torch.allclose(a, b, rtol=1e-4, atol=1e-6) for a, b in zip(grads_cl, grads,
                                                                           strict=True))


@pytest.mark.slow  # about a minute of compilation on a 2-core CPU
def test_compiled_matches_eager_in_loss_and_gradients():
    net, x0 = tiny_unet(), torch.randn(8, 3, 16, 16)
    loss, grads = loss_and_grads(net, x0, enabled=False)
    loss_c, grads_c = loss_and_grads(torch.compile(net), x0, enabled=False)
    assert torch.allclose(loss_c, loss, rtol=1e-4)
    assert all(torch.allclose(a, b, rtol=1e-3, atol=1e-5) for a, b in zip(grads_c, grads,
                                                                          strict=True))


@pytest.mark.parametrize("impl", ["foreach", "fused"])
def test_fast_adamw_matches_the_plain_loop(impl):
    nets = [tiny_unet(), tiny_unet()]
    opts = [torch.optim.AdamW(nets[0].parameters(), lr=1e-2, weight_decay=0.1, foreach=False),
            torch.optim.AdamW(nets[1].parameters(), lr=1e-2, weight_decay=0.1, **{impl: True})]
    x0 = torch.randn(4, 3, 16, 16)
    for _ in range(3):
        for net, opt in zip(nets, opts, strict=True):
            _, grads = loss_and_grads(net, x0, enabled=False)
            for p, g in zip(net.parameters(), grads, strict=True):
                p.grad = g
            opt.step()
    for a, b in zip(nets[0].parameters(), nets[1].parameters(), strict=True):
        assert torch.allclose(a, b, rtol=1e-5, atol=1e-6)


def test_sdpa_attention_matches_the_naive_formula():
    torch.manual_seed(0)
    block = Attention(16, head_dim=8, norm="group", groups=4)
    nn.init.normal_(block.proj.weight, std=0.1)  # zero-initialised: the block would be identity
    x = torch.randn(2, 16, 4, 4)
    q, k, v = block.qkv(block.norm(x)).flatten(2).view(2, 3, 2, 8, 16).transpose(-1, -2).unbind(1)
    weights = torch.softmax(q @ k.transpose(-1, -2) / 8**0.5, dim=-1)  # [b, heads, hw, hw]
    naive = x + block.proj((weights @ v).transpose(-1, -2).reshape(2, 16, 4, 4))
    assert torch.allclose(block(x), naive, atol=1e-5)


@pytest.mark.slow  # a minute of compilation on a 2-core CPU
def test_compiled_sampling_matches_eager(tmp_path, tiny_overrides):
    run_dir = inkfuse.train(load_recipe("shapes", tiny_overrides), tmp_path / "run",
                            progress=False)
    run, compiled_run = inkfuse.load_run(run_dir), inkfuse.load_run(run_dir, compile=True)
    x, t = torch.randn(4, 3, 16, 16), torch.full((4,), 40)
    with torch.no_grad():
        assert torch.allclose(compiled_run.net(x, t), run.net(x, t), atol=1e-5)
    # The first DDIM step divides the noise estimate by sqrt(alpha_bar_T), ~1e-3 at the end of
    # the cosine schedule, so last-bit differences of the network reach the images at ~1e-4.
    eager = inkfuse.sample(run, 4, steps=3, progress=False)
    compiled = inkfuse.sample(compiled_run, 4, steps=3, progress=False)
    assert torch.allclose(compiled, eager, atol=1e-3)
