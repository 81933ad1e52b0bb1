"""The DLI assessment bar: train `mnist.toml` for 10 minutes on this CPU, then ask for each digit
with classifier-free guidance and ≤ 50 DDIM steps, and count how often the shipped MNIST
classifier (> 99% on real test digits) reads the digit that was asked for.

    python benchmarks/mnist_accuracy.py                   # trains runs/bench-mnist, scores it
    python benchmarks/mnist_accuracy.py --run runs/mnist  # scores an existing run

Writes results/mnist_accuracy.md and results/mnist_samples.png.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

import inkfuse
from inkfuse import viz
from inkfuse.metrics.classifier import load_classifier, predict, read_info

RESULTS = Path(__file__).parent / "results"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", help="score this run instead of training one")
    p.add_argument("--minutes", type=float, default=10.0)
    p.add_argument("--per-class", type=int, default=100)
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--guidance", type=float, nargs="+", default=[1.0, 2.0, 3.0, 5.0])
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()

    run_dir = Path(args.run or "runs/bench-mnist")
    if args.run is None:
        inkfuse.train(inkfuse.load_recipe("mnist", [f"train.max_minutes={args.minutes}"]), run_dir)
    run = inkfuse.load_run(run_dir)
    last = json.loads((run_dir / "log.jsonl").read_text().splitlines()[-1])
    classifier = load_classifier("mnist")
    labels = torch.arange(10).repeat_interleave(args.per_class)

    rows = []
    for w in args.guidance:
        t0 = time.monotonic()
        images = inkfuse.sample(run, len(labels), labels=labels, guidance=w, steps=args.steps,
                                sampler="ddim", seed=args.seed)
        seconds = time.monotonic() - t0
        hit = predict(classifier, images) == labels
        per_class = hit.view(10, -1).float().mean(1)
        # The DLI check: 5 samples per class.
        dli = hit.view(10, -1)[:, :5].float().mean().item()
        rows.append((w, hit.float().mean().item(), dli, per_class.min().item(),
                     seconds / len(labels)))
        print(f"w={w}: accuracy {100 * rows[-1][1]:.1f}% (DLI 5/class: {100 * dli:.0f}%)",
              flush=True)
        if w == 3.0:
            viz.save_grid(images.view(10, -1, *images.shape[1:])[:, :10].flatten(0, 1),
                          RESULTS / "mnist_samples.png", nrow=10)

    info = read_info("mnist")
    lines = [
        "# MNIST: class accuracy of guided samples", "",
        f"Run `{run_dir}`: {last['step']} steps in {last['seconds'] / 60:.1f} min of training "
        f"({last['images_per_s']:.0f} images/s) on this machine ({torch.get_num_threads()} "
        f"threads). DDIM {args.steps} steps, "
        f"{args.per_class} samples per digit, seed {args.seed}. Judge: the shipped MNIST "
        f"classifier ({100 * info['test_accuracy']:.2f}% on the real test set).", "",
        "| guidance w | accuracy | DLI check (5/class) | worst digit | s/image |",
        "|---:|---:|---:|---:|---:|",
    ]
    lines += [f"| {w:g} | {100 * a:.1f}% | {100 * d:.0f}% | {100 * m:.0f}% | {s:.3f} |"
              for w, a, d, m, s in rows]
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "mnist_accuracy.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
