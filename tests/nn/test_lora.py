"""LoRA adapters (`nn.lora`): the update is B A per part in closed form, a zero B leaves the
network exactly as it was, only the adapters learn, and merging them into the weights computes
what the hooked network computes."""

from __future__ import annotations

import pytest
import torch
from test_text_unet import K, L, W, text_net  # the same small text U-Net

from inkfuse.nn.lora import Adapted, LoRA, narrowest, targets


def inputs(b: int = 3) -> tuple[tuple[torch.Tensor, ...], dict[str, torch.Tensor]]:
    torch.manual_seed(1)
    mask = torch.ones(b, L, dtype=torch.bool)
    mask[:, 3:] = False
    return ((torch.randn(b, 3, 8, 8), torch.randint(0, 100, (b,))),
            {"vector": torch.randn(b, K), "tokens": torch.randn(b, L, W), "mask": mask})


def randomise(adapted: Adapted) -> None:
    """A trained-looking B (it starts at zero)."""
    torch.manual_seed(3)
    for adapter in adapted.adapters.values():
        torch.nn.init.normal_(adapter.up, std=0.2)


def test_each_part_gets_its_own_rank_r_update() -> None:
    torch.manual_seed(0)
    lora = LoRA(5, 12, rank=2, alpha=4.0, parts=3)
    torch.nn.init.normal_(lora.up)
    x = torch.randn(7, 5)
    delta = lora.delta()  # [12, 5]
    torch.testing.assert_close(lora(x), x @ delta.T)  # the low-rank path computes x (BA)ᵀ
    for p in range(3):  # q, k and v: each block B_p A_p (times alpha / r = 2), rank <= 2
        block = delta[4 * p:4 * (p + 1)]
        torch.testing.assert_close(block, 2.0 * lora.up[p] @ lora.down[2 * p:2 * (p + 1)])
        assert torch.linalg.matrix_rank(block) == 2
    assert torch.linalg.matrix_rank(delta) == 5  # the stack is not rank 2: three adapters
    conv = LoRA(5, 12, rank=2, alpha=4.0, parts=3, conv=True)  # a 1×1 conv: channels first
    conv.load_state_dict(lora.state_dict())
    image = torch.randn(2, 5, 3, 3)
    torch.testing.assert_close(conv(image), torch.einsum("oi,bihw->bohw", delta, image))


@pytest.mark.parametrize("mode", ["both", "pooled"])
def test_targets_are_the_attention_projections_and_the_text_projection(mode: str) -> None:
    net = text_net(mode)
    names = [name for name, _, _ in targets(net)]
    assert names[0] == "cond_embed"
    attention = [n for n in names if n.endswith((".qkv", ".q", ".kv", ".proj"))]
    assert len(attention) == len(names) - 1
    cross = sum(n.endswith(".kv") for n in names)
    assert cross == (0 if mode == "pooled" else sum(n.endswith(".qkv") for n in names))
    assert narrowest(net) == K  # cond_embed reads the K-wide pooled embedding


def test_zero_b_is_the_base_exactly_and_only_adapters_learn() -> None:
    net = text_net("both")
    args, kwargs = inputs()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    expected = net(*args, **kwargs)
    adapted = Adapted(net, rank=2)
    assert torch.equal(adapted(*args, **kwargs), expected)  # B = 0: not a bit changes
    rank, count = 2, 0
    for _, layer, parts in targets(net):
        out, inp = layer.weight.shape[:2]
        count += rank * (parts * inp + out)  # A: [parts · r, in], B: [parts, out / parts, r]
    assert sum(p.numel() for p in adapted.parameters()) == count
    assert all(k.startswith("adapters.") for k in adapted.state_dict())  # no base weights
    opt = torch.optim.SGD(adapted.parameters(), lr=0.1)
    for _ in range(2):
        adapted(*args, **kwargs).square().mean().backward()
        opt.step()
        opt.zero_grad()
    assert all(p.grad is None for p in net.parameters())
    assert all(torch.equal(v, before[k]) for k, v in net.state_dict().items())
    assert not torch.equal(adapted(*args, **kwargs), expected)  # B moved off zero


def test_merged_weights_compute_what_the_hooked_network_does() -> None:
    net = text_net("both")
    args, kwargs = inputs()
    adapted = Adapted(net, rank=3, alpha=6.0)
    randomise(adapted)
    hooked = adapted(*args, **kwargs)
    assert not torch.allclose(hooked, text_net("both")(*args, **kwargs), atol=1e-3)
    adapted_layers = {name for name, _, _ in targets(net)}
    untouched = {k: v.clone() for k, v in net.state_dict().items()
                 if k.rsplit(".", 1)[0] not in adapted_layers}
    merged = adapted.merge()
    assert merged is net
    torch.testing.assert_close(merged(*args, **kwargs), hooked, atol=1e-5, rtol=1e-5)
    assert all(torch.equal(net.state_dict()[k], v) for k, v in untouched.items())
