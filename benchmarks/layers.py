"""The U-Net's rewritten layers against their plain forms, at the shapes where they run in the
benchmark models (batch 64, bf16 autocast, the machine's threads):

- `NearestUpConv` (one stride-2 transposed conv) against nearest upsampling then a 3×3 conv;
- `modulated_norm` (one group_norm call) against GroupNorm, then × (1 + scale) + shift;
  both followed by SiLU, as in the ResBlock;
- `conv_plus_pointwise` (the 1×1 skip conv as a batched matmul-add) against conv3×3(h) + conv1×1(x),
  the end of a ResBlock that changes width.

Each pair computes the same function (tests/nn/test_unet.py checks outputs and gradients).

    python benchmarks/layers.py          # writes results/layers.md
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from throughput import RESULTS
from torch import Tensor

from inkfuse.nn.blocks import NearestUpConv, conv_plus_pointwise, modulated_norm
from inkfuse.runtime import keep_freed_memory

BATCH = 64
UP_SHAPES = [(64, 32, 8), (64, 64, 8), (64, 32, 14), (64, 32, 32)]  # in, out channels; side
NORM_SHAPES = [(32, 16), (64, 8), (32, 28), (32, 64)]  # channels, side
SKIP_SHAPES = [(64, 32, 16), (128, 64, 8), (128, 64, 4), (64, 32, 28), (64, 32, 64)]


def ms(fn: Callable[[], None], seconds: float) -> float:
    """Median milliseconds per call over `seconds` (after a warm-up)."""
    for _ in range(3):
        fn()
    times, t0 = [], time.perf_counter()
    while time.perf_counter() - t0 < seconds or len(times) < 5:
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return 1e3 * statistics.median(times)


Row = tuple[str, tuple[float, float], tuple[float, float]]


def timings(layer: Callable[..., Tensor], inputs: list[Tensor],
            seconds: float) -> tuple[float, float]:
    """(inference, forward + backward) milliseconds of `layer(*inputs)` under bf16 autocast."""
    autocast = torch.autocast("cpu", dtype=torch.bfloat16)

    def sample() -> None:
        with torch.inference_mode(), autocast:
            layer(*inputs)

    def train() -> None:
        leaves = [x.detach().requires_grad_() for x in inputs]
        with autocast:
            out = layer(*leaves)
        out.backward(torch.ones_like(out))

    return ms(sample, seconds), ms(train, seconds)


def up_row(cin: int, cout: int, side: int, seconds: float) -> Row:
    up = NearestUpConv(cin, cout)
    x = torch.randn(BATCH, cin, side, side, dtype=torch.bfloat16)

    def plain(x: Tensor) -> Tensor:
        return up.conv(F.interpolate(x, scale_factor=2, mode="nearest"))

    return (f"{cin}→{cout} ch, {side}→{2 * side} px", timings(plain, [x], seconds),
            timings(up, [x], seconds))


def norm_row(channels: int, side: int, seconds: float) -> Row:
    norm = torch.nn.GroupNorm(8, channels)
    x = torch.randn(BATCH, channels, side, side, dtype=torch.bfloat16)
    scale, shift = torch.randn(2, BATCH, channels, dtype=torch.bfloat16)

    def plain(h: Tensor, s: Tensor, b: Tensor) -> Tensor:
        return F.silu(norm(h) * (1 + s[:, :, None, None]) + b[:, :, None, None])

    def fused(h: Tensor, s: Tensor, b: Tensor) -> Tensor:
        return F.silu(modulated_norm(norm, h, s, b))

    return (f"{channels} ch, {side} px", timings(plain, [x, scale, shift], seconds),
            timings(fused, [x, scale, shift], seconds))


def skip_row(cin: int, cout: int, side: int, seconds: float) -> Row:
    conv, skip = torch.nn.Conv2d(cout, cout, 3, padding=1), torch.nn.Conv2d(cin, cout, 1)
    h = torch.randn(BATCH, cout, side, side, dtype=torch.bfloat16)
    x = torch.randn(BATCH, cin, side, side, dtype=torch.bfloat16)

    def plain(h: Tensor, x: Tensor) -> Tensor:
        return conv(h) + skip(x)

    def fused(h: Tensor, x: Tensor) -> Tensor:
        return conv_plus_pointwise(conv, h, skip, x)

    return (f"{cin}→{cout} ch, {side} px", timings(plain, [h, x], seconds),
            timings(fused, [h, x], seconds))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=2.0, help="per measurement")
    p.add_argument("--threads", type=int, help="torch threads (default: one per core)")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    keep_freed_memory()
    lines = ["# The rewritten layers against their plain forms", "",
             f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, "
             f"torch {torch.__version__}; load average at start {os.getloadavg()[0]:.2f}. Batch "
             f"{BATCH}, bf16 autocast, median ms per call (`python benchmarks/layers.py`).", ""]
    sections = {
        "Nearest ×2 + 3×3 conv: `F.interpolate` + conv vs `NearestUpConv`":
            [up_row(*shape, args.seconds) for shape in UP_SHAPES],
        "GroupNorm × (1 + scale) + shift, then SiLU: three ops vs `modulated_norm`":
            [norm_row(*shape, args.seconds) for shape in NORM_SHAPES],
        "3×3 conv(h) + 1×1 conv(x): two convs vs `conv_plus_pointwise`":
            [skip_row(*shape, args.seconds) for shape in SKIP_SHAPES],
    }
    for title, rows in sections.items():
        lines += [f"## {title}", "",
                  "| shape | sampling: plain → fast | × | training (fwd+bwd): plain → fast | × |",
                  "|---|---:|---:|---:|---:|"]
        for name, (p_inf, p_train), (f_inf, f_train) in rows:
            lines.append(f"| {name} | {p_inf:.2f} → {f_inf:.2f} | {p_inf / f_inf:.2f}× "
                         f"| {p_train:.2f} → {f_train:.2f} | {p_train / f_train:.2f}× |")
        lines.append("")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "layers.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
