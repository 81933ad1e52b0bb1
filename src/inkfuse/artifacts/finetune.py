"""What a fine-tuned run dir holds besides what every run does, read and written only here.

    NEW/config.json              the base's recipe, its own [train] and a [finetune] table
    NEW/checkpoint/              the loop's: every weight (full fine-tune) or the adapters alone
    NEW/class-images.safetensors prior preservation: the class images the base drew, once
    NEW/clip/, NEW/vae/          a full fine-tune's copies of the base's frozen parts, and
    NEW/tokens/*.safetensors     of the tokens learned for it (textual inversion)

A LoRA run keeps no copies: it is its adapters and `finetune.base`, the base run's path relative
to NEW (so the two can move together), checked on load against the sha256 of the weights the
adapters were trained on (`weights_digest`).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from torch import Tensor

from inkfuse.artifacts import checkpoint
from inkfuse.artifacts.clip import copy_clip
from inkfuse.artifacts.lock import LOCK
from inkfuse.artifacts.tokens import TOKENS
from inkfuse.artifacts.vae import copy_vae
from inkfuse.config import Config
from inkfuse.errors import CheckpointError
from inkfuse.io import copy_files
from inkfuse.text.conditioner import is_pretrained

CLASS_IMAGES = "class-images.safetensors"


def base_reference(base: Path, out: Path) -> str:
    """`base` as `finetune.base` stores it: relative to the run dir `out`."""
    return os.path.relpath(base.resolve(), out.resolve())


def base_dir(run_dir: Path, reference: str) -> Path:
    """The base run a fine-tuned `run_dir` refers to."""
    return (run_dir / reference).resolve()


def weights_digest(run_dir: Path) -> str:
    """sha256 of a run's EMA weights file: what identifies the weights a fine-tune started from
    (training the base on, or `inkfuse ema --save`, changes it)."""
    ckpt = checkpoint.find(run_dir)
    if ckpt is None:
        raise CheckpointError(f"{run_dir} holds no checkpoint: train it first")
    digest = hashlib.sha256()
    with open(ckpt / "ema.safetensors", "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def check_out(out: Path, base: Path) -> None:
    """Refuse an `out` that holds anything but a fine-tune of `base` (an earlier one, to resume
    or to start again after it was killed): it would be written over. A folder with nothing but
    the lock file is as good as new."""
    if not out.is_dir() or not {p.name for p in out.iterdir()} - {LOCK}:
        return
    fix = "choose a new --out"
    if not (out / "config.json").is_file():
        raise CheckpointError(f"--out {out} is a folder that is not a run dir; {fix}")
    reference = checkpoint.read_json(out / "config.json").get("finetune", {}).get("base")
    if not isinstance(reference, str):
        raise CheckpointError(f"--out {out} holds a run that is not a fine-tune; {fix}")
    if base_dir(out, reference) != base.resolve():
        raise CheckpointError(f"--out {out} holds a fine-tune of {base_dir(out, reference)}, "
                              f"not of {base}; {fix}")


def copy_parts(base: Path, out: Path, config: Config) -> None:
    """A full fine-tune's own copies of the base's frozen text encoder, the tokens learned for
    it, and VAE, so that it is a whole run dir like any other that reads its prompts as the base
    does (a pretrained open_clip encoder is named, not copied)."""
    if not is_pretrained(config.text.encoder) and not (out / "clip").is_dir():
        copy_clip(base / "clip", out / "clip")
    learned = tuple(sorted(p.name for p in (base / TOKENS).glob("*.safetensors")))
    copy_files(base / TOKENS, out / TOKENS, learned)
    if config.data.vae and not (out / "vae").is_dir():
        copy_vae(base / "vae", out / "vae")


def _class_key(prompt: str, count: int, seed: int, base_weights: str) -> dict[str, str]:
    return {"prompt": prompt, "count": str(count), "seed": str(seed),
            "base_weights": base_weights}


def load_class_images(run_dir: Path, prompt: str, count: int, seed: int, base_weights: str
                      ) -> Tensor | None:
    """The class images saved in `run_dir` (uint8 [count, C, H, W]) if they were drawn for
    these settings, else None (none yet, or a killed earlier start's for other settings)."""
    path = run_dir / CLASS_IMAGES
    if not path.is_file():
        return None
    images = checkpoint.load_tensors(path)["images"]  # damage: one CheckpointError line
    try:
        with safe_open(str(path), framework="pt") as f:
            saved = f.metadata() or {}
    except (SafetensorError, OSError) as e:
        raise CheckpointError(f"{path} is damaged ({e}); delete it to draw the class images "
                              "again") from None
    key = _class_key(prompt, count, seed, base_weights)
    return images if all(saved.get(k) == v for k, v in key.items()) else None


def save_class_images(run_dir: Path, images: Tensor, prompt: str, seed: int,
                      base_weights: str) -> None:
    """uint8 class images [N, C, H, W], with what they were drawn for, atomically."""
    if images.dtype != torch.uint8:
        raise ValueError("class images are saved as uint8")
    checkpoint.save_tensors(run_dir / CLASS_IMAGES, {"images": images},
                            **_class_key(prompt, len(images), seed, base_weights))
