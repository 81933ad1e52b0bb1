"""How fast the FID Inception runs, and whether bf16 changes the FID.

    python benchmarks/fid_speed.py --n 1000 --reference 10000

Three parts, written to results/fid_speed.md:

1. Throughput, images/s from uint8 images to features (resize + network), at batch 25 on this
   machine's threads: the TorchScript graph as it ships (fp32, the path before the eager
   module), the eager module in fp32 and in bf16 (`inkfuse.metrics.inception`).
2. Agreement: FID of real sets against real sets, with fp32 features and with bf16 features of
   the same images: Fashion-MNIST train against test (near 0), Fashion-MNIST train blurred
   (a model-like FID), MNIST against Fashion-MNIST (far apart), shapes scenes of two seeds
   (16 px RGB). The relative gap |bf16 − fp32| / fp32 is the number to keep below 0.5%.
3. A whole reference: `reference_stats("fashion-mnist", n=--reference)` timed in bf16 (not
   cached: written to a temporary cache), the wait before a data set's first FID.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from inkfuse.config import DataConfig
from inkfuse.data import build_dataset
from inkfuse.metrics import fid

RESULTS = Path(__file__).parent / "results"


def images(name: str, split: str, n: int, seed: int = 0) -> torch.Tensor:
    cfg = (DataConfig(name=name, split=split, limit=n, size=28) if name != "shapes"
           else DataConfig(name="shapes", count=n, size=16))
    return build_dataset(cfg, seed=seed).images[:n]


def blurred(x: torch.Tensor) -> torch.Tensor:
    """A 3×3 box blur: a model-like gap from the real images (FID ~90 at n = 1000)."""
    y = F.avg_pool2d(x.float(), 3, stride=1, padding=1, count_include_pad=False)
    return y.round().clamp(0, 255).to(torch.uint8)


def throughput(net, x: torch.Tensor) -> float:
    fid.inception_features(x[:25], network=net, progress=False, batch_size=25)  # warm-up
    start = time.perf_counter()
    fid.inception_features(x, network=net, progress=False, batch_size=25)
    return len(x) / (time.perf_counter() - start)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=1000, help="images per set in the agreement part")
    ap.add_argument("--speed-n", type=int, default=200, help="images per throughput cell")
    ap.add_argument("--reference", type=int, default=10_000, help="0 skips the timed reference")
    ap.add_argument("--out", type=Path, default=RESULTS / "fid_speed.md")
    args = ap.parse_args()
    torch.manual_seed(0)
    graph = fid._load_jit(str(fid.inception_path()), "cpu")  # fed channels-last, as all are
    nets = {"TorchScript graph, fp32": fid.Inception(graph, "graph", torch.device("cpu")),
            "eager, fp32": fid.load_inception(device="cpu", precision="fp32"),
            "eager, bf16": fid.load_inception(device="cpu", precision="bf16")}
    lines = [f"# FID Inception: speed and bf16 agreement ({torch.get_num_threads()} threads, "
             f"CPU capability {torch.backends.cpu.get_cpu_capability()})", "",
             "| network | 28 px gray img/s | 16 px RGB img/s |", "|---|---:|---:|"]
    gray = images("fashion-mnist", "test", args.speed_n)
    rgb = images("shapes", "train", args.speed_n, seed=1)
    for name, net in nets.items():
        lines.append(f"| {name} | {throughput(net, gray):.1f} | {throughput(net, rgb):.1f} |")
        print(lines[-1], flush=True)

    n = args.n
    test = images("fashion-mnist", "test", n)
    train = images("fashion-mnist", "train", n)
    sets = {"fmnist train vs test": (train, test),
            "fmnist train blurred vs test": (blurred(train), test),
            "mnist test vs fmnist test": (images("mnist", "test", n), test),
            "shapes seed 1 vs seed 2": (images("shapes", "train", n, 1),
                                        images("shapes", "train", n, 2))}
    lines += ["", f"| FID (n = {n} each) | fp32 | bf16 | relative gap |", "|---|---:|---:|---:|"]
    for name, (a, b) in sets.items():
        scores = [fid.fid_from_features(
            *(fid.inception_features(s, network=nets[k], progress=False, batch_size=25)
              for s in (a, b))) for k in ("eager, fp32", "eager, bf16")]
        gap = abs(scores[1] - scores[0]) / scores[0]
        lines.append(f"| {name} | {scores[0]:.3f} | {scores[1]:.3f} | {100 * gap:.2f}% |")
        print(lines[-1], flush=True)

    if args.reference:
        with tempfile.TemporaryDirectory() as cache:
            os.environ["INKFUSE_CACHE"] = cache
            start = time.perf_counter()
            ref = fid.reference_stats("fashion-mnist", n=args.reference, size=28,
                                      network=nets["eager, bf16"], progress=True)
            minutes = (time.perf_counter() - start) / 60
        assert np.isfinite(ref.sigma).all()
        lines += ["", f"A {len(ref.features):,}-image Fashion-MNIST reference in bf16 "
                  f"(`reference_stats`, computed once, then cached): **{minutes:.1f} min**."]
        print(lines[-1], flush=True)
    args.out.write_text("\n".join(lines) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
