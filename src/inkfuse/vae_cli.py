"""`inkfuse vae`: train the latent-diffusion autoencoder, and move images to latents and back.

    inkfuse vae train --recipe vae-shapes --out runs/vae-shapes [--set train.steps=500]
    inkfuse vae encode runs/vae-shapes --image a.png --image b.jpg --out latents.safetensors
    inkfuse vae encode runs/vae-shapes --image photos/ --out latents.safetensors   # a folder
    inkfuse vae encode runs/vae-shapes --image samples.npz --out latents.safetensors
    inkfuse vae decode runs/vae-shapes --latents latents.safetensors --out images.png

A latents file holds one tensor, `latents` [N, C, h, w]: the posterior means multiplied by the
run's scale factor, so they have about unit variance, as a latent diffusion model wants them.
`decode` divides by the same factor. Images are resized (centre crop) to the size the VAE was
trained at; an .npz is what `inkfuse sample --out x.npz` writes (uint8 `images` [N, H, W, C]).

The main CLI registers it with `add_vae_parser(subparsers)` and prints any InkfuseError.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np
import torch

from inkfuse.errors import ConfigError, DataError

LATENTS_KIND = "vae-latents"


def add_vae_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register `vae` (with train / encode / decode) on an argparse subparsers object."""
    vae = subparsers.add_parser("vae", help="train an autoencoder for latent diffusion; "
                                "encode images to latents and decode them back")
    sub = vae.add_subparsers(dest="vae_command", required=True)

    tr = sub.add_parser("train", help="train (or resume) a VAE from a recipe")
    tr.add_argument("--recipe", default="vae-shapes",
                    help="VAE recipe file or built-in name (default vae-shapes)")
    tr.add_argument("--out", default=None, help="run dir (default runs/<recipe name>)")
    tr.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="override a recipe key, e.g. --set train.steps=200")
    tr.add_argument("--max-minutes", type=float, default=None)
    tr.add_argument("--quiet", action="store_true", help="no progress bar")
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
    return vae


def cmd_train(args: argparse.Namespace) -> None:
    from inkfuse.config import resolve_recipe
    from inkfuse.train.vae import load_vae_recipe, train_vae

    overrides = list(args.set)
    if args.max_minutes is not None:
        overrides.append(f"train.max_minutes={args.max_minutes}")
    config = load_vae_recipe(args.recipe, overrides)
    out = args.out or f"runs/{resolve_recipe(args.recipe).stem}"
    metrics = train_vae(config, out, progress=not args.quiet)
    print(f"held-out PSNR {metrics['psnr']:.2f} dB, SSIM {metrics['ssim']:.4f}, scale factor "
          f"{metrics['scale_factor']:.5f}, latents {'x'.join(map(str, metrics['latent_shape']))}"
          f" after {metrics['steps']} steps")
    print(f"saved to {out} (vae.safetensors, vae.json, reconstructions.png)")


def _out(path: str, suffixes: tuple[str, ...]) -> Path:
    out = Path(path)
    if out.suffix.lower() not in suffixes:
        raise ConfigError(f"--out {path}: use a file ending in {', '.join(suffixes)}")
    out.parent.mkdir(parents=True, exist_ok=True)
    return out


def read_images(sources: list[str], size: int, channels: int) -> torch.Tensor:
    """uint8 [N, channels, size, size] from image files, folders of them and .npz files."""
    from inkfuse.data.folder import EXTENSIONS, load_image

    images = []
    for source in map(Path, sources):
        if source.is_dir():
            files = sorted(p for p in source.iterdir()
                           if p.suffix.lower() in EXTENSIONS and not p.name.startswith("."))
            if not files:
                raise DataError(f"{source} has no images ({', '.join(EXTENSIONS)})")
            images += [load_image(p, size, channels) for p in files]
        elif source.suffix.lower() == ".npz":
            images += list(_npz_images(source, size, channels))
        else:
            images.append(load_image(source, size, channels))
    return torch.stack(images)


def _npz_images(path: Path, size: int, channels: int) -> torch.Tensor:
    """The uint8 `images` [N, H, W, C] of an .npz, resized, with grey <-> RGB as needed."""
    from inkfuse.data.transforms import resize

    if not path.is_file():
        raise DataError(f"{path} not found; check the path")
    try:
        with np.load(path) as f:
            array = f["images"]
    except (OSError, ValueError, KeyError) as e:
        raise DataError(f"{path} is not an .npz with uint8 'images' [N, H, W, C] "
                        f"({str(e).splitlines()[0]})") from None
    if array.dtype != np.uint8 or array.ndim != 4 or array.shape[-1] not in (1, 3):
        raise DataError(f"{path}: 'images' must be uint8 [N, H, W, 1 or 3], got "
                        f"{array.dtype} {list(array.shape)}")
    x = torch.from_numpy(array).permute(0, 3, 1, 2)
    if x.shape[1] != channels:  # as PIL converts: ITU-R 601 luma, or grey copied to RGB
        luma = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
        x = (x.expand(-1, 3, -1, -1) if channels == 3
             else (x.float() * luma).sum(1, keepdim=True).round().to(torch.uint8))
    return resize(x.contiguous(), size)


def cmd_encode(args: argparse.Namespace) -> None:
    from inkfuse.io import atomic_path
    from inkfuse.train.checkpoint import save_tensors
    from inkfuse.train.vae import load_vae

    out = _out(args.out, (".safetensors",))
    vae = load_vae(args.run_dir)
    images = read_images(args.image, vae.image_size, vae.cfg.in_channels)
    with torch.no_grad():
        latents = torch.cat([vae.encode(x).mean * vae.scale_factor for x in _floats(images)])
    with atomic_path(out) as tmp:
        save_tensors(tmp, {"latents": latents}, kind=LATENTS_KIND,
                     scale_factor=f"{vae.scale_factor.item():.8g}")
    print(f"wrote {len(latents)} latents {list(latents.shape[1:])} to {out}")


def _floats(images: torch.Tensor, batch: int = 256) -> list[torch.Tensor]:
    return [images[i:i + batch].float().div(127.5).sub(1.0) for i in range(0, len(images), batch)]


def read_latents(path: str | Path, channels: int) -> torch.Tensor:
    """The `latents` tensor of a file from `inkfuse vae encode`, checked for `channels`."""
    from inkfuse.errors import CheckpointError
    from inkfuse.train.checkpoint import load_tensors

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
    from inkfuse.io import atomic_path
    from inkfuse.train.vae import load_vae
    from inkfuse.viz import save_grid, to_uint8

    out = _out(args.out, (".png", ".npz"))
    vae = load_vae(args.run_dir)
    latents = read_latents(args.latents, vae.cfg.latent_channels)
    with torch.no_grad():
        images = torch.cat([vae.decode(z / vae.scale_factor).clamp(-1, 1)
                            for z in latents.split(256)])
    if out.suffix.lower() == ".npz":
        with atomic_path(out) as tmp, open(tmp, "wb") as f:
            np.savez(f, images=to_uint8(images))
    else:  # native pixels: one image as it is, a batch as a grid
        n = len(images)
        save_grid(images, out, nrow=min(n, 8), scale=1, padding=0 if n == 1 else 2)
    print(f"wrote {len(images)} images to {out}")
