"""A handful of images of one subject with their captions: what DreamBooth fine-tunes on.

A folder of images, captioned by its `captions.csv` (`path,caption`) or `captions.jsonl` when it
has one (read as `data.captions` reads every captioned folder), else every image by one
`prompt`. Captioned images are RGB, as every text run's are.
"""

from __future__ import annotations

from pathlib import Path

import torch

from inkfuse.data.captions import folder_pairs
from inkfuse.data.dataset import ImageDataset
from inkfuse.data.folder import EXTENSIONS, load_image
from inkfuse.errors import DataError

CAPTION_FILES = ("captions.csv", "captions.jsonl")


def subject_images(path: str | Path, size: int, channels: int, prompt: str) -> ImageDataset:
    """uint8 [N, channels, size, size] images of folder `path` with one caption each."""
    root = Path(path)
    if not root.is_dir():
        raise DataError(f"--images {path} is not a folder: give the folder with the subject's "
                        "images (3 to 5 are usual)")
    if any((root / name).is_file() for name in CAPTION_FILES):
        pairs = folder_pairs(root, size, least=1)
        return ImageDataset(pairs.images, captions=pairs.captions, name=root.name)
    files = sorted(p for p in root.iterdir() if p.suffix.lower() in EXTENSIONS
                   and not p.name.startswith(".") and p.is_file())
    if not files:
        raise DataError(f"{root} has no images ({', '.join(EXTENSIONS)}); put the subject's "
                        "images in it (3 to 5 are usual)")
    images = torch.stack([load_image(p, size, channels) for p in files])
    return ImageDataset(images, captions=[prompt] * len(files), name=root.name)
