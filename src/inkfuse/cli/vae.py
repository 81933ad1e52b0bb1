"""`inkfuse vae`: train the latent-diffusion autoencoder, and move images to latents and back.

    inkfuse vae train vae-shapes --out runs/vae-shapes [--set train.steps=500]
    inkfuse vae encode runs/vae-shapes --image a.png --image b.jpg --out latents.safetensors
    inkfuse vae encode runs/vae-shapes --image photos/ --out latents.safetensors   # a folder
    inkfuse vae encode runs/vae-shapes --image samples.npz --out latents.safetensors
    inkfuse vae decode runs/vae-shapes --latents latents.safetensors --out images.png

A latents file holds one tensor, `latents` [N, C, h, w]: the posterior means multiplied by the
run's scale factor, so they have about unit variance, as a latent diffusion model wants them.
`decode` divides by the same factor. Images are resized (centre crop) to the size the VAE was
trained at; an .npz is what `inkfuse sample --out x.npz` writes (uint8 `images` [N, H, W, C]).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any

from inkfuse.cli.args import (
    add_train_args,
    existing_run,
    out_path,
    overrides,
    read_images,
    run_dir,
    write_images,
)
from inkfuse.errors import ConfigError, DataError

if TYPE_CHECKING:
    import torch

LATENTS_KIND = "vae-latents"


def add_parser(subparsers: Any) -> None:
    """Register `vae` (with train / encode / decode) on the main parser's subparsers."""
    vae = subparsers.add_parser("vae", help="train an autoencoder for latent diffusion; "
                                "encode images to latents and decode them back")
    sub = vae.add_subparsers(dest="vae_command", required=True)

    tr = sub.add_parser("train", help="train (or resume) a VAE from a recipe")
    add_train_args(tr, "VAE recipe", default="vae-shapes")
    # the spelling before `inkfuse vae train RECIPE`, still in older notes and scripts
    tr.add_argument("--recipe", dest="recipe_flag", default=None, help=argparse.SUPPRESS)
    tr.set_defaults(fn=cmd_train)

    en = sub.add_parser("encode", help="images -> latents (.safetensors)")
    en.add_argument("run_dir")
    en.add_argument("--image", action="append", required=True,
                    help="an image file, a folder of them, or an .npz of images (repeat)")
    en.add_argument("--out", required=True, help=".safetensors file to write")
    en.set_defaults(fn=cmd_encode)

    de = sub.add_parser("decode", help="latents (.safetensors) -> images")
    de.add_argument("run_dir")
    de.add_argument("--latents", required=True, help="a file from `inkfuse vae encode`")
    de.add_argument("--out", required=True, help=".png (one image, or a grid) or .npz")
    de.set_defaults(fn=cmd_decode)


add_vae_parser = add_parser  # the name tests/train/test_vae_train.py imports


def cmd_train(args: argparse.Namespace) -> None:
    from inkfuse.artifacts.checkpoint import read_json
    from inkfuse.config import load_recipe
    from inkfuse.train import train

    if args.recipe_flag is not None:
        if args.recipe != "vae-shapes":
            raise ConfigError("give the recipe once: inkfuse vae train RECIPE")
        args.recipe = args.recipe_flag
    config = load_recipe(args.recipe, overrides(args), kind="vae")
    out = train(config, run_dir(args), progress=not args.quiet)
    metrics = read_json(out / "vae.json")["metrics"]
    print(f"held-out PSNR {metrics['psnr']:.2f} dB, SSIM {metrics['ssim']:.4f}, scale factor "
          f"{metrics['scale_factor']:.5f}, latents {'x'.join(map(str, metrics['latent_shape']))}"
          f" after {metrics['steps']} steps")
    print(f"saved to {out} (vae.safetensors, vae.json, reconstructions.png)")


def cmd_encode(args: argparse.Namespace) -> None:
    import torch

    from inkfuse.artifacts.checkpoint import save_tensors
    from inkfuse.artifacts.vae import load_vae
    from inkfuse.io import atomic_path

    out = out_path(args.out, ".safetensors")
    vae = load_vae(existing_run(args.run_dir, "VAE run dir"))
    images = read_images(args.image, vae.image_size, vae.cfg.in_channels)
    with torch.no_grad():  # in batches of 256, as floats in [-1, 1]
        latents = torch.cat([vae.encode(x.float() / 127.5 - 1).mean * vae.scale_factor
                             for x in images.split(256)])
    with atomic_path(out) as tmp:
        save_tensors(tmp, {"latents": latents}, kind=LATENTS_KIND,
                     scale_factor=f"{vae.scale_factor.item():.8g}")
    print(f"wrote {len(latents)} latents {list(latents.shape[1:])} to {out}")


def read_latents(path: str | Path, channels: int) -> torch.Tensor:
    """The `latents` tensor of a file from `inkfuse vae encode`, checked for `channels`."""
    from inkfuse.artifacts.checkpoint import load_tensors
    from inkfuse.errors import CheckpointError

    if not Path(path).is_file():
        raise DataError(f"latents file {path} not found; check the path")
    try:
        latents = load_tensors(Path(path)).get("latents")
    except CheckpointError:
        raise DataError(f"{path} is damaged or was not written by inkfuse; make it with "
                        "`inkfuse vae encode`") from None
    if latents is None or latents.ndim != 4 or latents.shape[1] != channels:
        shape = None if latents is None else list(latents.shape)
        raise DataError(f"{path} has no 'latents' [N, {channels}, h, w] for this VAE "
                        f"(found {shape}); encode with the same run")
    return latents.float()


def cmd_decode(args: argparse.Namespace) -> None:
    import torch

    from inkfuse.artifacts.vae import load_vae

    out = out_path(args.out, ".png", ".npz")
    vae = load_vae(existing_run(args.run_dir, "VAE run dir"))
    latents = read_latents(args.latents, vae.cfg.latent_channels)
    with torch.no_grad():
        images = torch.cat([vae.decode(z / vae.scale_factor).clamp(-1, 1)
                            for z in latents.split(256)])
    write_images(images, out)  # native pixels: one image as it is, a batch as a grid
    print(f"wrote {len(images)} images to {out}")
