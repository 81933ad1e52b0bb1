"""`inkfuse inpaint` and `inkfuse img2img`: edit an image file with a trained run.

    inkfuse inpaint runs/demo --image in.png --mask mask.png --out filled.png   # white = fill
    inkfuse img2img runs/demo --image in.png --strength 0.7 --class 3 --out cross.png

Images of any common format and size are converted to the model's channels; a mask is read as
greyscale, > 50 % = fill, and must have the image's size. The result is one PNG of the input's
size (the model works at its own resolution inside; inpainting keeps the unmasked pixels
exactly), written atomically. The editing itself is `inkfuse.editing`.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any

from inkfuse.cli.args import (
    GUIDANCE_MAX,
    SAMPLER_HELP,
    SEED_MAX,
    STEPS_MAX,
    add_condition_args,
    add_trust_arg,
    condition,
    existing_run,
    number,
    out_path,
    read_image,
    read_mask,
    write_images,
)

if TYPE_CHECKING:
    import torch

    from inkfuse.artifacts.run import Run


def add_parser(subparsers: Any) -> None:
    """Register `inpaint` and `img2img` on the main parser's subparsers."""
    ip = subparsers.add_parser("inpaint", help="fill the masked part of an image (RePaint)")
    _shared_args(ip)
    ip.add_argument("--mask", required=True, help="same size as the image; white (> 50%%) = fill")
    ip.add_argument("--resample", action=number(int, lo=1, most=100), default=1,
                    help="RePaint resampling: redo each step R times (slower, more coherent)")
    ip.set_defaults(fn=cmd_inpaint)

    ii = subparsers.add_parser("img2img", help="redraw an image from a noised copy (SDEdit)")
    _shared_args(ii)
    ii.add_argument("--strength", action=number(float, lo=0, hi=1, lo_open=True), default=0.6,
                    help="in (0, 1]: how much noise to add, 1 = ignore the input almost entirely")
    ii.add_argument("--sampler", default=None, help=SAMPLER_HELP)
    ii.set_defaults(fn=cmd_img2img)


def _shared_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_dir")
    p.add_argument("--image", required=True, help="input image (png, jpg, ...; any size)")
    p.add_argument("--out", required=True, help="output .png, of the input image's size")
    p.add_argument("--steps", action=number(int, lo=1, most=STEPS_MAX), default=None,
                   help="sampler steps (default 50)")
    p.add_argument("--guidance", action=number(float, lo=0, most=GUIDANCE_MAX), default=None,
                   help="CFG weight with --class or --prompt (default: the recipe's)")
    add_condition_args(p, context=False, many=False)
    p.add_argument("--seed", action=number(int, lo=0, most=SEED_MAX), default=0)
    add_trust_arg(p, "a run's open_clip text encoder")


def _common(args: argparse.Namespace) -> tuple[Run, torch.Tensor, tuple[int, int], Path,
                                                 dict[str, Any]]:
    """The output path (checked first), the run, the image at its own size and that size
    (w, h), and the keywords inpaint and img2img share."""
    from inkfuse.artifacts.run import load_run

    out = out_path(args.out, ".png")
    run = load_run(existing_run(args.run_dir), trust=args.trust_weights)
    image = read_image(args.image, run.image_shape[0])
    size = (image.shape[3], image.shape[2])  # (w, h), against which the mask is checked
    options = dict(guidance=args.guidance, seed=args.seed, progress=True) | condition(args)
    if args.steps is not None:
        options["steps"] = args.steps
    return run, image, size, out, options


def cmd_inpaint(args: argparse.Namespace) -> None:
    from inkfuse.editing import inpaint

    run, image, size, out, options = _common(args)
    mask = read_mask(args.mask, size)
    write_images(inpaint(run, image, mask, resample=args.resample, **options), out)
    print(f"wrote {out}")


def cmd_img2img(args: argparse.Namespace) -> None:
    from inkfuse.editing import img2img

    run, image, _, out, options = _common(args)
    sampler = args.sampler or run.config.sample.sampler
    write_images(img2img(run, image, strength=args.strength, sampler=sampler, **options), out)
    print(f"wrote {out}")
