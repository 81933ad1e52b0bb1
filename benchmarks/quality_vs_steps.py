"""Quality against the number of function evaluations (NFE), one line per sampler.

For a trained run, every sampler draws the same class-balanced batch (same seed, CFG at the
recipe's weight) at 5, 10, 20, 50 and 100 NFE, and DDPM at 1000 as the reference; each batch is
scored with the dataset's metric (the classifier-space Fréchet distance for MNIST-like data,
Inception FID for the rest) and the accuracy of the asked class.

    python benchmarks/quality_vs_steps.py --recipe fashion-mnist --train-minutes 10
    python benchmarks/quality_vs_steps.py --run runs/shapes --n 1000

Writes results/quality_vs_steps_<dataset>.md and .png.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

import inkfuse
from inkfuse import viz
from inkfuse.diffusion.samplers import get_sampler
from inkfuse.metrics import classifier
from inkfuse.metrics.evaluation import evaluate_images

RESULTS = Path(__file__).parent / "results"
SAMPLERS = ["ddim", "euler", "heun", "dpmpp-2m", "unipc"]


def steps_for(sampler: str, budget: int) -> int:
    """The most steps whose evaluations fit in `budget` (Heun makes two per step but the last)."""
    steps = max(1, budget)
    while get_sampler(sampler).nfe(steps) > budget and steps > 1:
        steps -= 1
    return steps


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", help="a trained run dir")
    p.add_argument("--recipe", help="train this recipe first (into runs/bench-<recipe>)")
    p.add_argument("--train-minutes", type=float, default=10.0)
    p.add_argument("--set", action="append", default=[], help="recipe overrides for training")
    p.add_argument("--n", type=int, default=1000, help="samples per point")
    p.add_argument("--nfe", type=int, nargs="+", default=[5, 10, 20, 50, 100])
    p.add_argument("--samplers", nargs="+", default=SAMPLERS)
    p.add_argument("--ddpm-steps", type=int, default=1000)
    p.add_argument("--guidance", type=float, default=None)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    device = "cuda" if torch.cuda.is_available() else "cpu"

    if args.run:
        run_dir = Path(args.run)
    else:
        run_dir = Path(f"runs/bench-{args.recipe}")
        config = inkfuse.load_recipe(args.recipe,
                                     [f"train.max_minutes={args.train_minutes}", *args.set])
        inkfuse.train(config, run_dir)
    run = inkfuse.load_run(run_dir, device=device)
    data = run.config.data
    w = run.config.sample.guidance if args.guidance is None else args.guidance
    quality = "fd_cls" if data.name in classifier.DATASETS else "fid"
    classes = run.config.model.cond_dim
    labels = torch.arange(args.n) % classes if classes else None

    points = [(s, steps_for(s, b)) for s in args.samplers for b in args.nfe]
    points.append(("ddpm", args.ddpm_steps))
    rows = []
    for sampler, steps in points:
        if device == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        images = inkfuse.sample(run, args.n, labels=labels, sampler=sampler, steps=steps,
                                guidance=w, seed=args.seed, progress=False)
        seconds = time.perf_counter() - t0
        metrics = [quality] + (["accuracy"] if labels is not None else [])
        scores = evaluate_images(images, labels, data, metrics, progress=False)
        rows.append({"sampler": sampler, "steps": steps, "nfe": get_sampler(sampler).nfe(steps),
                     "quality": scores[quality], "accuracy": scores.get("accuracy"),
                     "ms_per_image": 1000 * seconds / args.n})
        print(f"{sampler:9s} NFE {rows[-1]['nfe']:4d}: {quality} {scores[quality]:.3f} "
              f"accuracy {scores.get('accuracy', float('nan')):.3f}", flush=True)

    name = data.name
    reference = rows[-1]["quality"]
    device_name = torch.cuda.get_device_name() if device == "cuda" else "CPU"
    lines = [
        f"# Quality vs steps: {name} ({run_dir})", "",
        f"{args.n} class-balanced samples per point, CFG w = {w:g}, seed {args.seed}, on "
        f"{device_name}. Quality: `{quality}` (lower is better; "
        f"{'Fréchet distance in the domain classifier' if quality == 'fd_cls' else 'Inception FID'}"
        f"'s feature space). Reference: DDPM with {args.ddpm_steps} steps = {reference:.3f}.", "",
        f"| sampler | NFE | {quality} | vs DDPM-{args.ddpm_steps} | accuracy | ms/image |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        acc = "" if r["accuracy"] is None else f"{100 * r['accuracy']:.1f}%"
        lines.append(f"| {r['sampler']} | {r['nfe']} | {r['quality']:.3f} | "
                     f"{100 * (r['quality'] / reference - 1):+.0f}% | {acc} | "
                     f"{r['ms_per_image']:.2f} |")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"quality_vs_steps_{name}.md").write_text("\n".join(lines) + "\n")
    series = {s: ([r["nfe"] for r in rows if r["sampler"] == s],
                  [r["quality"] for r in rows if r["sampler"] == s]) for s in args.samplers}
    series[f"ddpm ({args.ddpm_steps})"] = ([r["nfe"] for r in rows[-1:]], [reference])
    viz.plot_lines(series, RESULTS / f"quality_vs_steps_{name}.png", xlabel="NFE",
                   ylabel=quality, title=f"{name}: quality vs function evaluations", logx=True,
                   logy=True)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
