"""`inkfuse prior train` and `inkfuse variations`: DALL-E 2 (unCLIP) on a CLIP-image decoder run.

    inkfuse train shapes-unclip --out runs/unclip     # CLIP -> decoder -> prior (RUN/prior)
    inkfuse prior train runs/unclip --set prior.steps=3000   # a prior for a decoder without one
    inkfuse sample runs/unclip --prompt "a red circle" --out x.png   # text -> prior -> decoder
    inkfuse sample runs/unclip --prompt "a red circle" --no-prior --out y.png   # text embedding
    inkfuse variations runs/unclip --image x.png --n 8 --out v.png

`prior train` takes the run's own config.json as its recipe, with the [prior] table of `--recipe`
(default: the run's own if it has one, else the built-in shapes-unclip's) and `--set prior.KEY=
VALUE` on top; it trains only RUN/prior, so rerunning it resumes the prior. A variation is the
input image's CLIP image embedding, from the run's own CLIP, decoded with fresh noise; the grid
shows the input first.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from inkfuse.cli.args import (
    GUIDANCE_MAX,
    SEED_MAX,
    STEPS_MAX,
    add_set_args,
    add_trust_arg,
    existing_run,
    number,
    only_sections,
    out_path,
    overrides,
    read_images,
)
from inkfuse.errors import ConfigError

VARIATIONS_MAX = 64  # one row of the grid


def add_parser(subparsers: Any) -> None:
    """Register `prior` (with train) and `variations` on the main parser's subparsers."""
    prior = subparsers.add_parser("prior", help="the diffusion prior of a CLIP-image run "
                                  "(unCLIP): text -> CLIP image embedding")
    sub = prior.add_subparsers(dest="prior_command", required=True)
    tr = sub.add_parser("train", help="train (or resume) RUN/prior of a decoder run")
    tr.add_argument("run_dir", help="a data.labels = 'clip-image' run (its CLIP and data)")
    tr.add_argument("--recipe", default=None,
                    help="recipe whose [prior] table to use (default: the run's own, else "
                         "shapes-unclip's)")
    add_set_args(tr)
    tr.set_defaults(fn=cmd_prior_train)

    va = subparsers.add_parser("variations", help="new images of what an image shows: its CLIP "
                               "image embedding decoded with fresh noise (clip-image runs)")
    va.add_argument("run_dir")
    va.add_argument("--image", required=True, help="input image (png, jpg, ...; any size)")
    va.add_argument("--n", action=number(int, lo=1, most=VARIATIONS_MAX), default=8,
                    help="variations beside the input")
    va.add_argument("--out", default=None,
                    help=".png grid, the input first (default: IMAGE-variations.png here)")
    va.add_argument("--steps", action=number(int, lo=1, most=STEPS_MAX), default=None,
                    help="decoder steps (default: the recipe's)")
    va.add_argument("--guidance", action=number(float, lo=0, most=GUIDANCE_MAX), default=None,
                    help="decoder CFG weight (default: the recipe's)")
    va.add_argument("--seed", action=number(int, lo=0, most=SEED_MAX), default=0)
    add_trust_arg(va, "a run's open_clip text encoder")
    va.set_defaults(fn=cmd_variations)


def cmd_prior_train(args: argparse.Namespace) -> None:
    from inkfuse.artifacts.prior import prior_dir, read_prior_meta
    from inkfuse.train.prior import prior_config, train_prior

    run = existing_run(args.run_dir)
    args.out = str(prior_dir(run))  # where an interrupted run's checkpoint is (app.main)
    sets = only_sections(args.set, ("prior",), "inkfuse prior train")
    out = train_prior(prior_config(run, args.recipe, overrides(args, sets)), run,
                      progress=not args.quiet)
    m = read_prior_meta(out)["metrics"]
    print(f"prior saved in {out} after {m['steps']} steps: on training captions its embeddings "
          f"have cosine {m['cosine_prior']:.3f} with the image's (the text embedding's: "
          f"{m['cosine_text']:.3f}; another image's: {m['cosine_other']:.3f}). Sample with: "
          f"inkfuse sample {run} --prompt ... --out x.png")


def cmd_variations(args: argparse.Namespace) -> None:
    import torch

    from inkfuse import pipelines, viz

    out = out_path(args.out or f"{Path(args.image).stem}-variations.png", ".png")
    run = pipelines.load_run(existing_run(args.run_dir), trust=args.trust_weights, prior=False)
    image = read_images([args.image], run.config.data.size, run.image_shape[0])
    if len(image) != 1:
        raise ConfigError(f"--image {args.image} holds {len(image)} images: give one image "
                          "file")
    options = {k: v for k, v in (("steps", args.steps), ("guidance", args.guidance))
               if v is not None}
    images = pipelines.variations(run, image, args.n, seed=args.seed, progress=True, **options)
    viz.save_grid(torch.cat([image.float() / 127.5 - 1, images]), out, nrow=args.n + 1)
    print(f"wrote {out}: {args.image} (first) and {args.n} variations")
