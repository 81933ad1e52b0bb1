"""`inkfuse inpaint` and `inkfuse img2img`: argument parsing and file handling only.

Images of any common format are centre-cropped, resized and converted to the model's size and
channels (`load_image`); a mask is read as greyscale, > 50 % = fill, and must have the image's
size. The result is one PNG at the model's resolution, written atomically.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from inkfuse.diffusion.samplers import SAMPLERS
from inkfuse.errors import ConfigError, DataError


def _out_png(path: str) -> Path:
    out = Path(path)
    if out.suffix.lower() != ".png":
        raise ConfigError(f"--out {path}: use a file ending in .png")
    return out


def _read(path: str, run) -> tuple[torch.Tensor, tuple[int, int]]:
    """The image as float [1, C, S, S] in [-1, 1] at the model's size, and its original (w, h)."""
    from inkfuse.data.folder import load_image
    from inkfuse.data.transforms import resize

    pixels = load_image(path, None, run.image_shape[0])
    size = (pixels.shape[2], pixels.shape[1])
    return resize(pixels[None], run.image_shape[1]).float() / 127.5 - 1, size


def _write(image: torch.Tensor, out: Path) -> None:
    from PIL import Image

    from inkfuse.io import atomic_path
    from inkfuse.viz import to_uint8

    pixels = to_uint8(image)[0]
    with atomic_path(out) as tmp:
        Image.fromarray(pixels[..., 0] if pixels.shape[-1] == 1 else pixels).save(tmp, "PNG")


def _common(args: argparse.Namespace):
    from inkfuse.pipelines import load_run

    out = _out_png(args.out)
    if args.steps is not None and args.steps < 1:
        raise ConfigError(f"--steps must be at least 1, got {args.steps}")
    run = load_run(args.run_dir)
    image, size = _read(args.image, run)
    options = dict(guidance=args.guidance, seed=args.seed, progress=True,
                   labels=None if args.class_id is None else torch.tensor([args.class_id]),
                   prompts=None if args.prompt is None else [args.prompt])
    if args.steps is not None:
        options["steps"] = args.steps
    return run, image, size, out, options


def cmd_inpaint(args: argparse.Namespace) -> None:
    from inkfuse.data.folder import load_image
    from inkfuse.data.transforms import resize
    from inkfuse.editing import inpaint

    run, image, (w, h), out, options = _common(args)
    mask = load_image(args.mask, None, 1)
    if tuple(mask.shape[1:]) != (h, w):
        raise DataError(f"{Path(args.mask).name} is {mask.shape[2]}x{mask.shape[1]} but the "
                        f"image is {w}x{h}: give a mask of the same size")
    mask = (resize(mask[None], run.image_shape[1]).float() > 127.5).float()
    _write(inpaint(run, image, mask, resample=args.resample, **options), out)
    print(f"wrote {out}")


def cmd_img2img(args: argparse.Namespace) -> None:
    from inkfuse.editing import img2img

    if not 0 < args.strength <= 1:
        raise ConfigError(f"--strength must be in (0, 1], got {args.strength}")
    run, image, _, out, options = _common(args)
    sampler = args.sampler or run.config.sample.sampler
    _write(img2img(run, image, strength=args.strength, sampler=sampler, **options), out)
    print(f"wrote {out}")


def _shared_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_dir")
    p.add_argument("--image", required=True, help="input image (png, jpg, ...; any size)")
    p.add_argument("--out", required=True, help="output .png at the model's resolution")
    p.add_argument("--steps", type=int, default=None, help="sampler steps (default 50)")
    p.add_argument("--guidance", type=float, default=None,
                   help="CFG weight with --class or --prompt (default: the recipe's)")
    p.add_argument("--class", dest="class_id", type=int, default=None,
                   help="class to steer towards (default: unconditional)")
    p.add_argument("--prompt", default=None,
                   help="text to steer towards (text-conditioned models)")
    p.add_argument("--seed", type=int, default=0)


def add_editing_parsers(subparsers) -> None:
    """Register `inpaint` and `img2img` on the main parser's subparsers."""
    ip = subparsers.add_parser("inpaint", help="fill the masked part of an image (RePaint)")
    _shared_args(ip)
    ip.add_argument("--mask", required=True, help="same size as the image; white (> 50%%) = fill")
    ip.add_argument("--resample", type=int, default=1,
                    help="RePaint resampling: redo each step R times (slower, more coherent)")
    ip.set_defaults(fn=cmd_inpaint)

    ii = subparsers.add_parser("img2img", help="redraw an image from a noised copy (SDEdit)")
    _shared_args(ii)
    ii.add_argument("--strength", type=float, default=0.6,
                    help="in (0, 1]: how much noise to add, 1 = ignore the input almost entirely")
    ii.add_argument("--sampler", default=None, help=f"{', '.join(SAMPLERS)} "
                    "(default: the recipe's)")
    ii.set_defaults(fn=cmd_img2img)
