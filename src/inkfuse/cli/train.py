"""`inkfuse train` and `inkfuse demo`: train (or resume) a diffusion run from a recipe.

    inkfuse train shapes --out runs/shapes
    inkfuse train recipes/mnist.toml --set train.batch_size=64 --max-minutes 10
    inkfuse demo                      # the shapes recipe, then samples.png and reverse.gif

Rerunning the same command resumes a run from its last checkpoint.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from inkfuse.cli.args import add_set_args, add_train_args, overrides, run_dir


def add_parser(subparsers: Any) -> None:
    """Register `demo` and `train` on the main parser's subparsers."""
    demo = subparsers.add_parser("demo", help="train the built-in shapes recipe and draw samples")
    demo.add_argument("--out", default="runs/demo")
    add_set_args(demo)
    demo.set_defaults(fn=cmd_demo)

    tr = subparsers.add_parser("train", help="train (or resume) a run from a TOML recipe")
    add_train_args(tr, "recipe (shapes, mnist, ...)")
    tr.set_defaults(fn=cmd_train)


def cmd_train(args: argparse.Namespace) -> None:
    from inkfuse.config import load_recipe
    from inkfuse.train import train

    config = load_recipe(args.recipe, overrides(args), kind="diffusion")
    out = train(config, run_dir(args), progress=not args.quiet)
    print(f"run saved in {out} (sample with: inkfuse sample {out} --out samples.png)")


def cmd_demo(args: argparse.Namespace) -> None:
    """The shapes recipe, then what shows it worked: a grid with one row per class and an
    animation of the reverse process."""
    import torch

    from inkfuse import pipelines, viz
    from inkfuse.config import load_recipe
    from inkfuse.train import train

    config = load_recipe("shapes", overrides(args), kind="diffusion")
    out = Path(args.out)
    print(f"training the shapes recipe into {out} (stop any time with Ctrl-C; rerun to resume)")
    train(config, out, progress=not args.quiet)
    run = pipelines.load_run(out)
    images, labels = pipelines.sample_grid(run, progress=not args.quiet)
    viz.save_grid(images, out / "samples.png", nrow=config.sample.per_class, labels=labels)
    frames: list[torch.Tensor] = []
    pipelines.sample(run, len(run.class_names) or 4, guidance=config.sample.guidance,
                     steps=config.sample.steps, progress=False,
                     on_step=lambda i, x, p: frames.append(x.clamp(-1, 1).cpu()))
    viz.save_gif(frames, out / "reverse.gif", nrow=len(frames[0]))
    print(f"wrote {out / 'samples.png'} (one row per class), {out / 'reverse.gif'}, "
          f"{out / 'loss.png'}")
