"""Low-rank adapters (LoRA, Hu et al. 2021): a frozen weight W plus a trained update of rank r,
W + (alpha / r) B A, with A [r, in] random and B [out, r] zero at the start, so that the adapted
network starts as exactly the base network and only A and B learn.

What is adapted in a U-Net (`targets`): the projections of every attention layer, the q, k, v
and output of self-attention and of cross-attention to the text, as in the paper (which adapts
a transformer's attention weights) and in DreamBooth-LoRA; and the pooled text's projection into
the blocks' embedding (`cond_embed`), the only way a prompt reaches a U-Net of
`text.conditioning = "pooled"`. Not the 3×3 convolutions (LoCon adapts those too): a rank-r
update of one has r (9 in + out) weights against r (in + out) for a projection, and there are
many more of them, while what a new subject under a prompt needs is mostly how the text is read
and where it is attended; the fewer weights move, the less the rest of what the run draws drifts.

A fused projection (self-attention's qkv, cross-attention's kv) gets one adapter per part, so q,
k and v each have their own rank-r update as if they were separate layers (`parts`).

`Adapted` runs the base network with its adapters hooked into the target layers' outputs; its
parameters and state dict are the adapters' alone, so that training, the EMA and checkpoints
hold nothing else. `merge` folds trained adapters into the weights, after which the network is
a plain U-Net again and samples exactly as fast as the base.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from inkfuse.nn.blocks import Attention, CrossAttention


class LoRA(nn.Module):
    """The update of one Linear or 1×1 Conv2d layer of `in_features` → `parts` × `out_part`
    outputs: per part p, (alpha / rank) B_p A_p, its output added to the layer's."""

    def __init__(self, in_features: int, out_features: int, rank: int, alpha: float = 0.0,
                 parts: int = 1, conv: bool = False):
        super().__init__()
        if out_features % parts:
            raise ValueError(f"{out_features} outputs do not split into {parts} parts")
        self.rank, self.parts, self.conv = rank, parts, conv
        self.scale = (alpha or rank) / rank
        self.down = nn.Parameter(torch.empty(parts * rank, in_features))  # A, stacked per part
        self.up = nn.Parameter(torch.zeros(parts, out_features // parts, rank))  # B, zero
        nn.init.kaiming_uniform_(self.down, a=math.sqrt(5))  # as nn.Linear, and loralib's A

    def forward(self, x: Tensor) -> Tensor:
        """The update's output for the layer's input x ([B, in, H, W] for a 1×1 conv, [..., in]
        for a linear layer): x through A, then each part's B, never forming B A."""
        h = x.movedim(1, -1) if self.conv else x  # [..., in]
        h = F.linear(h, self.down.to(h.dtype)).unflatten(-1, (self.parts, self.rank))
        out = torch.einsum("...pr,por->...po", h, self.up.to(h.dtype)).flatten(-2) * self.scale
        return out.movedim(-1, 1) if self.conv else out  # [..., out] as the layer's

    def delta(self) -> Tensor:
        """The update as a weight [out, in]: (alpha / rank) B_p A_p for each part, stacked."""
        down = self.down.unflatten(0, (self.parts, self.rank))  # [P, r, in]
        return (self.up @ down).flatten(0, 1) * self.scale


def targets(net: nn.Module) -> Iterator[tuple[str, nn.Module, int]]:
    """(name, layer, parts) of every layer of `net` that gets an adapter (module docstring)."""
    embed = getattr(net, "cond_embed", None)
    if isinstance(embed, nn.Linear):
        yield "cond_embed", embed, 1
    for name, module in net.named_modules():
        if isinstance(module, Attention):
            yield f"{name}.qkv", module.qkv, 3
            yield f"{name}.proj", module.proj, 1
        elif isinstance(module, CrossAttention):
            yield f"{name}.q", module.q, 1
            yield f"{name}.kv", module.kv, 2
            yield f"{name}.proj", module.proj, 1


def _adapter(layer: nn.Module, rank: int, alpha: float, parts: int) -> LoRA:
    """The adapter of a target layer (a Linear or a 1×1 Conv2d), on the layer's device."""
    weight = layer.weight
    return LoRA(weight.shape[1], weight.shape[0], rank, alpha, parts,
                isinstance(layer, nn.Conv2d)).to(weight.device)


def narrowest(net: nn.Module) -> int:
    """The smallest input or per-part output width among the target layers: the highest rank
    that is still low rank everywhere."""
    return min(min(layer.weight.shape[1], layer.weight.shape[0] // parts)
               for _, layer, parts in targets(net))


class Adapted(nn.Module):
    """A frozen network with rank-`rank` adapters on its target layers, called like it.

    The base network is held but not registered as a submodule: `parameters()`, `state_dict()`
    and `load_state_dict()` see the adapters only, which is what the optimizer updates and what a
    checkpoint stores; `train()` and `eval()` reach the base too (its dropout stays as in the
    run's recipe). The adapters are made on the base's device."""

    def __init__(self, net: nn.Module, rank: int, alpha: float = 0.0):
        super().__init__()
        found = list(targets(net))
        if not found:
            raise ValueError("the network has no attention or text projection to adapt")
        object.__setattr__(self, "base", net.requires_grad_(False))  # not a submodule
        # module names may not hold dots: down.1.1.qkv -> down-1-1-qkv
        self.adapters = nn.ModuleDict({name.replace(".", "-"): _adapter(layer, rank, alpha, parts)
                                       for name, layer, parts in found})
        self.layers = {name.replace(".", "-"): layer for name, layer, _ in found}
        self._hooks = [layer.register_forward_hook(self._hook(self.adapters[key]))
                       for key, layer in self.layers.items()]

    @staticmethod
    def _hook(adapter: LoRA):
        def add(module: nn.Module, args: tuple[Tensor, ...], out: Tensor) -> Tensor:
            return out + adapter(args[0]).to(out.dtype)

        return add

    def forward(self, *args: object, **kwargs: object) -> Tensor:
        return self.base(*args, **kwargs)

    def train(self, mode: bool = True) -> Adapted:
        super().train(mode)
        self.base.train(mode)
        return self

    @torch.no_grad()
    def merge(self) -> nn.Module:
        """The base network with every adapter's update added to its layer's weight and the
        hooks removed: a plain network again, computing what this one computes (up to float
        rounding)."""
        for key, layer in self.layers.items():
            delta = self.adapters[key].delta()
            layer.weight += delta.view_as(layer.weight).to(layer.weight.dtype)
        for hook in self._hooks:
            hook.remove()
        self._hooks = []
        return self.base
