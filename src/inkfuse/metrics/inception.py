"""The FID InceptionV3 (`inception-2015-12-05`) as an eager module built from the TorchScript file.

Why not run the TorchScript graph itself: every one of its 94 units is conv → batch norm → ReLU
with the statistics as separate tensors, so each unit makes three passes over its feature map,
and the graph casts each weight to the input's dtype on every call. Here the batch norm is folded
into the conv once at load (w' = w / sqrt(var + eps), b' = β − mean / sqrt(var + eps)), which is
exact in fp32, and the module is plain `nn.Conv2d`s that oneDNN runs in channels-last bf16 under
autocast. The layout is pytorch-fid's `FIDInceptionA/C/E` (the TF graph's pool3 network): the
average pools do not count padding, and the last block (`mixed_10`) max-pools its fourth branch.
Throughput and the FID agreement with the fp32 graph are in benchmarks/README.md.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

BN_EPS = 1e-3  # the TF graph's batch-norm epsilon


class ConvUnit(nn.Module):
    """conv (batch norm folded in) → ReLU."""

    def __init__(self, unit: torch.jit.ScriptModule) -> None:
        super().__init__()
        w = unit.weight.detach().double()
        scale = (unit.var.detach().double() + BN_EPS).rsqrt()
        self.conv = nn.Conv2d(w.shape[1], w.shape[0], tuple(w.shape[2:]), stride=unit.stride,
                              padding=unit.padding)
        with torch.no_grad():
            self.conv.weight.copy_(w * scale[:, None, None, None])
            self.conv.bias.copy_(unit.beta.detach().double() - unit.mean.detach().double() * scale)

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(self.conv(x), inplace=True)


def _avg_pool(x: Tensor) -> Tensor:
    return F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False)


def _max_pool(x: Tensor) -> Tensor:
    return F.max_pool2d(x, 3, stride=2)


class Tower(nn.Module):
    """A chain of conv units, optionally after a 3×3 average pool (the pool branch of A and C)."""

    def __init__(self, tower: torch.jit.ScriptModule) -> None:
        super().__init__()
        names = [n for n, _ in tower.named_children()]
        self.pool_first = names[0] == "pool"
        self.units = nn.Sequential(*(ConvUnit(getattr(tower, n)) for n in names
                                     if n != "pool"))

    def forward(self, x: Tensor) -> Tensor:
        return self.units(_avg_pool(x) if self.pool_first else x)


class Mixed(nn.Module):
    """Blocks A, B, C and D: branches concatenated on channels; a child named `pool` is the
    stride-2 max pool of the reduction blocks B and D."""

    def __init__(self, block: torch.jit.ScriptModule) -> None:
        super().__init__()
        self.order = [n for n, _ in block.named_children()]
        self.branches = nn.ModuleDict({
            n: ConvUnit(c) if hasattr(c, "weight") else Tower(c)
            for n, c in block.named_children() if n != "pool"})

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat([_max_pool(x) if n == "pool" else self.branches[n](x)
                          for n in self.order], 1)


class MixedE(nn.Module):
    """Block E: the 1×3 / 3×1 split branches; `max_pool` for the last one (mixed_10)."""

    UNITS = ("conv", "tower_conv", "tower_mixed_conv", "tower_mixed_conv_1", "tower_1_conv",
             "tower_1_conv_1", "tower_1_mixed_conv", "tower_1_mixed_conv_1", "tower_2_conv")

    def __init__(self, block: torch.jit.ScriptModule, max_pool: bool) -> None:
        super().__init__()
        for n in self.UNITS:
            setattr(self, n, ConvUnit(getattr(block, n)))
        self.max_pool = max_pool

    def forward(self, x: Tensor) -> Tensor:
        a = self.tower_conv(x)
        b = self.tower_1_conv_1(self.tower_1_conv(x))
        pooled = (F.max_pool2d(x, 3, stride=1, padding=1) if self.max_pool else _avg_pool(x))
        return torch.cat([self.conv(x), self.tower_mixed_conv(a), self.tower_mixed_conv_1(a),
                          self.tower_1_mixed_conv(b), self.tower_1_mixed_conv_1(b),
                          self.tower_2_conv(pooled)], 1)


class FIDInception(nn.Module):
    """[N, 3, 299, 299] in [-1, 1] → [N, 2048] pool3 features."""

    def __init__(self, scripted: torch.jit.ScriptModule) -> None:
        super().__init__()
        layers = scripted.net.layers
        self.stem = nn.ModuleList(ConvUnit(getattr(layers, f"conv{s}"))
                                  for s in ("", "_1", "_2", "_3", "_4"))
        self.blocks = nn.Sequential(
            *(Mixed(getattr(layers, f"mixed{s}")) for s in ("", "_1", "_2", "_3", "_4", "_5",
                                                           "_6", "_7", "_8")),
            MixedE(layers.mixed_9, max_pool=False), MixedE(layers.mixed_10, max_pool=True))
        self.requires_grad_(False)
        self.eval()

    def forward(self, x: Tensor) -> Tensor:
        c0, c1, c2, c3, c4 = self.stem
        x = _max_pool(c2(c1(c0(x))))  # [N, 64, 73, 73]
        x = _max_pool(c4(c3(x)))  # [N, 192, 35, 35]
        x = self.blocks(x)  # [N, 2048, 8, 8]
        return x.float().mean((2, 3))  # in fp32: bf16 features alone would move an FID ~1%
