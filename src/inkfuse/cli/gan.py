"""`inkfuse gan`: train a class-conditional GAN on the shared training loop, and draw from it.

    inkfuse gan train gan-fashion-mnist --out runs/gan --set train.max_minutes=5
    inkfuse gan sample runs/gan --n 64 --class 3 --out trousers.png     # or --out x.npz
    inkfuse gan sample runs/gan --n 80 --out grid.png        # no --class: every class in turn

A sample is one pass of the generator from z ~ N(0, I) drawn from `--seed`: the same seed gives
the same images.
"""

from __future__ import annotations

import argparse
from typing import Any

from inkfuse.cli.args import (
    N_MAX,
    SEED_MAX,
    add_train_args,
    existing_run,
    number,
    out_path,
    overrides,
    run_dir,
    write_images,
)
from inkfuse.errors import ConfigError


def add_parser(subparsers: Any) -> None:
    """Register `gan` (with train / sample) on the main parser's subparsers."""
    gan = subparsers.add_parser("gan", help="train a class-conditional GAN and sample it")
    sub = gan.add_subparsers(dest="gan_command", required=True)

    tr = sub.add_parser("train", help="train (or resume) a GAN from a recipe")
    add_train_args(tr, "GAN recipe", default="gan-fashion-mnist")
    tr.set_defaults(fn=cmd_train)

    sa = sub.add_parser("sample", help="draw images from a trained GAN")
    sa.add_argument("run_dir")
    sa.add_argument("--n", action=number(int, lo=1, most=N_MAX), default=64,
                    help="images to draw (default 64)")
    sa.add_argument("--class", dest="class_id", action=number(int, lo=0, most=SEED_MAX),
                    default=None, help="class id of every image (default: classes in turn)")
    sa.add_argument("--seed", action=number(int, lo=0, hi=SEED_MAX), default=0)
    sa.add_argument("--out", required=True, help=".png (one image, or a grid) or .npz")
    sa.set_defaults(fn=cmd_sample)


def cmd_train(args: argparse.Namespace) -> None:
    from inkfuse.artifacts.checkpoint import read_json
    from inkfuse.config import load_recipe
    from inkfuse.train import train

    config = load_recipe(args.recipe, overrides(args), kind="gan")
    out = train(config, run_dir(args), progress=not args.quiet)
    metrics = read_json(out / "gan.json")["metrics"]
    scores = ", ".join(f"{k} {metrics[k]:.4f}" for k in ("fd_cls", "accuracy") if k in metrics)
    print(f"{metrics['steps']} steps" + (f"; {scores}" if scores else ""))
    print(f"saved to {out} (gan.safetensors, gan.json, samples.png)")


def cmd_sample(args: argparse.Namespace) -> None:
    import torch

    from inkfuse.artifacts.gan import load_gan
    from inkfuse.nn.gan import generate
    from inkfuse.train.gan import balanced_labels

    out = out_path(args.out, ".png", ".npz")
    generator, meta = load_gan(existing_run(args.run_dir, "GAN run dir"))
    k = generator.cfg.num_classes
    if args.class_id is None:
        labels = balanced_labels(generator, args.n)
    elif not k:
        raise ConfigError(f"{args.run_dir} is an unconditional GAN: leave out --class")
    elif args.class_id >= k:
        raise ConfigError(f"--class {args.class_id} is not a class of {args.run_dir} (class "
                          f"ids 0..{k - 1}: {', '.join(meta['class_names'])})")
    else:
        labels = torch.full((args.n,), args.class_id)
    write_images(generate(generator, labels, args.seed), out)
    print(f"wrote {args.n} images to {out}")
