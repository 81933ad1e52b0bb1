"""Images from files: a whole folder as a dataset, or one file for inpainting and img2img.

A folder with one subfolder per class gives class labels (ids in sorted name order); a flat
folder gives images only. Every image is centre-cropped to a square and resized (bilinear,
antialiased), so photos of any shape work.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from inkfuse.data.dataset import ImageDataset
from inkfuse.data.transforms import resize
from inkfuse.errors import ConfigError, DataError

EXTENSIONS = (".bmp", ".gif", ".jpeg", ".jpg", ".png", ".webp")
_GREY_MODES = ("1", "L", "LA", "I", "I;16", "F")
_BROKEN = (OSError, SyntaxError, ValueError)  # what PIL raises for unreadable or truncated files


def _open(path: Path) -> Image.Image:
    """Open lazily (header only), with a DataError naming the file if that fails."""
    if not path.is_file():
        raise DataError(f"image {path} not found; check the path")
    try:
        return Image.open(path)
    except _BROKEN as e:
        raise DataError(f"{path} is not a readable image ({e}); delete or replace it") from None


def load_image(path: str | Path, size: int | None = None, channels: int = 3) -> torch.Tensor:
    """An image file as uint8 [channels, H, W] (1 = greyscale, 3 = RGB; alpha is dropped),
    centre-cropped and resized to size x size unless size is None."""
    if channels not in (1, 3):
        raise ConfigError(f"channels = {channels} is not supported; use 1 (greyscale) or 3 (RGB)")
    path = Path(path)
    mode = "L" if channels == 1 else "RGB"
    with _open(path) as image:
        if size:
            image.draft(mode, (size, size))  # JPEG: decode at a reduced scale that is still >= size
        try:
            pixels = np.array(image.convert(mode))
        except _BROKEN as e:
            raise DataError(f"{path} is corrupt or truncated ({e}); delete or replace it") from None
    x = torch.from_numpy(pixels).view(*pixels.shape[:2], channels).permute(2, 0, 1)
    return x.contiguous() if size is None else resize(x[None], size)[0]


def _images(folder: Path) -> list[Path]:
    return sorted(
        p for p in folder.iterdir()
        if p.suffix.lower() in EXTENSIONS and not p.name.startswith(".") and p.is_file()
    )


def _is_grey(path: Path) -> bool:
    with _open(path) as image:
        return image.mode in _GREY_MODES


def load(path: str | Path, size: int, limit: int = 0) -> ImageDataset:
    """The images in `path` at size x size: greyscale (1 channel) if every file is, else RGB."""
    root = Path(path)
    if not path or not root.is_dir():
        raise DataError(f"image folder {str(path)!r} not found; set data.path to an image folder")
    classes = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    files, ids = _images(root), []
    if classes and files:
        raise DataError(
            f"{root} has both loose images ({files[0].name}) and class subfolders; "
            "move the loose images into a subfolder"
        )
    for i, name in enumerate(classes):
        found = _images(root / name)
        if not found:
            raise DataError(f"class folder {root / name} has no images; add some or remove it")
        files += found
        ids += [i] * len(found)
    if not files:
        raise DataError(
            f"{root} has no images ({', '.join(EXTENSIONS)}); "
            "add some, all in it or in one subfolder per class"
        )
    files, ids = files[: limit or None], ids[: limit or None]
    channels = 1 if all(_is_grey(p) for p in files) else 3
    return ImageDataset(
        torch.stack([load_image(p, size, channels) for p in files]),
        labels=torch.tensor(ids, dtype=torch.int64) if classes else None,
        class_names=classes,
        name=root.name,
    )
