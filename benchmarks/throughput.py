"""Training throughput of the recipes' U-Nets: images/s, FLOPs per image, model-FLOP
utilisation against a matmul peak measured in the same run, and peak memory; fp32 and bf16.

    python benchmarks/throughput.py                # all recipes below, writes results/throughput.md
    python benchmarks/throughput.py --recipes shapes --seconds 5

Each configuration runs in its own process so that its peak memory (max RSS on CPU, the CUDA
allocator's peak on GPU) is its own.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from inkfuse.config import load_recipe, replace
from inkfuse.diffusion import Condition, Denoiser, Schedule
from inkfuse.nn import build_model
from inkfuse.runtime import keep_freed_memory
from inkfuse.train.loop import make_optimizer

RESULTS = Path(__file__).parent / "results"


def matmul_peak(dtype: torch.dtype, device: str, n: int = 2048, seconds: float = 3.0) -> float:
    """Achieved FLOP/s of a large square matmul: the ceiling for dense conv/linear work."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    iters, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        a @ b
        iters += 1
    if device == "cuda":
        torch.cuda.synchronize()
    return 2 * n**3 * iters / (time.perf_counter() - t0)


def one(recipe: str, precision: str, seconds: float, device: str,
        overrides: list[str]) -> dict:
    """Measure one (recipe, precision) in this process."""
    config = load_recipe(recipe, [f"train.precision='{precision}'", *overrides])
    tc, size = config.train, config.data.size
    channels = 1 if config.data.name in ("mnist", "fashion-mnist") else 3
    classes = 10 if config.data.name != "shapes" else 4
    config = replace(config, model={"in_channels": channels, "cond_dim": classes})
    net = build_model(config.model, size, config.diffusion.timesteps).to(device)
    memory = torch.channels_last if tc.channels_last else torch.contiguous_format
    net = net.to(memory_format=memory)
    opt = make_optimizer(net.parameters(), tc)
    schedule = Schedule.of(config.diffusion)
    b = tc.batch_size
    x0 = torch.randn(b, channels, size, size, device=device).contiguous(memory_format=memory)
    cond = Condition.from_labels(torch.arange(b, device=device) % classes, classes)
    autocast = torch.autocast(device, dtype=torch.bfloat16, enabled=precision == "bf16")
    denoiser = Denoiser(net, schedule)

    def step() -> None:
        with autocast:
            loss = denoiser.loss(x0, cond)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    with FlopCounterMode(display=False) as counter, autocast:
        denoiser.loss(x0, cond).backward()
    opt.zero_grad(set_to_none=True)
    flops_per_image = counter.get_total_flops() / b
    for _ in range(3):
        step()
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    steps, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        step()
        steps += 1
    if device == "cuda":
        torch.cuda.synchronize()
    elapsed = time.perf_counter() - t0
    peak_mem = (torch.cuda.max_memory_allocated() if device == "cuda"
                else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
    return {
        "recipe": recipe, "precision": precision, "batch": b, "size": size,
        "params": sum(p.numel() for p in net.parameters()),
        "flops_per_image": flops_per_image, "images_per_s": steps * b / elapsed,
        "peak_mem_mb": peak_mem / 2**20,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--recipes", nargs="+", default=["shapes", "mnist", "ddpm-course"])
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--set", action="append", default=[], help="recipe override for every run, "
                   "e.g. --set train.channels_last=true")
    p.add_argument("--one", nargs=2, metavar=("RECIPE", "PRECISION"), help=argparse.SUPPRESS)
    args = p.parse_args()
    keep_freed_memory()
    if args.one:
        print(json.dumps(one(*args.one, args.seconds, args.device, args.set)))
        return

    peaks = {d: matmul_peak(getattr(torch, d), args.device) for d in ("float32", "bfloat16")}
    rows = []
    for recipe in args.recipes:
        for precision in ("fp32", "bf16"):
            sets = [a for o in args.set for a in ("--set", o)]
            out = subprocess.run([sys.executable, __file__, "--one", recipe, precision,
                                  "--seconds", str(args.seconds), "--device", args.device, *sets],
                                 capture_output=True, text=True, check=True)
            r = json.loads(out.stdout.strip().splitlines()[-1])
            peak = peaks["float32" if precision == "fp32" else "bfloat16"]
            r["mfu"] = r["flops_per_image"] * r["images_per_s"] / peak
            rows.append(r)
            print(f"{recipe:12s} {precision}: {r['images_per_s']:8.1f} img/s, "
                  f"MFU {100 * r['mfu']:.1f}%", flush=True)

    device = torch.cuda.get_device_name() if args.device == "cuda" else platform.processor() or \
        platform.machine()
    lines = [
        f"# Training throughput ({device}, {torch.get_num_threads()} threads, torch "
        f"{torch.__version__})", "",
        f"Matmul peak measured in this run: fp32 {peaks['float32'] / 1e9:.0f} GFLOP/s, "
        f"bf16 {peaks['bfloat16'] / 1e9:.0f} GFLOP/s (2048² matmul). Recipe settings"
        + (f" with {', '.join(args.set)}" if args.set else "") + ".", "",
        "| recipe | precision | batch | size | params | GFLOP/image (fwd+bwd) | images/s | "
        "achieved GFLOP/s | MFU | peak memory |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        achieved = r["flops_per_image"] * r["images_per_s"] / 1e9
        lines.append(
            f"| {r['recipe']} | {r['precision']} | {r['batch']} | {r['size']} | "
            f"{r['params'] / 1e6:.2f} M | {r['flops_per_image'] / 1e9:.3f} | "
            f"{r['images_per_s']:.1f} | {achieved:.1f} | {100 * r['mfu']:.1f}% | "
            f"{r['peak_mem_mb']:.0f} MB |")
    RESULTS.mkdir(exist_ok=True)
    name = "throughput.md" if args.device == "cpu" else f"throughput-{args.device}.md"
    (RESULTS / name).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
