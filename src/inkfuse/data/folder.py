"""Images from files: a whole folder as a dataset, or one file for inpainting and img2img.

A folder with one subfolder per class gives class labels (ids in sorted name order); a flat
folder gives images only. Every image is centre-cropped to a square and resized (bilinear,
antialiased), so photos of any shape work.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch
from PIL import Image

from inkfuse.data.dataset import ImageDataset
from inkfuse.data.transforms import resize
from inkfuse.errors import ConfigError, DataError

EXTENSIONS = (".bmp", ".gif", ".jpeg", ".jpg", ".png", ".webp")
_GREY_MODES = ("1", "L", "LA", "I", "I;16", "F")
_BROKEN = (OSError, SyntaxError, ValueError)  # what PIL raises for unreadable or truncated files
_WIDE = ("I;16", "I;16B", "I;16L", "I", "F")  # more than 8 bits per pixel: scaled, not clipped
# An image whose header claims more pixels than this is refused before it is decoded: a PNG of a
# few kilobytes can claim 70000 x 70000 and need gigabytes (a decompression bomb).
MAX_PIXELS = 64 * 1024 * 1024


def _open(path: Path | BinaryIO, name: str | None = None) -> Image.Image:
    """Open lazily (header only), with a DataError naming the file (or `name`, for bytes that
    came from elsewhere, such as an upload) if that fails."""
    if name is None:
        if not Path(path).is_file():
            raise DataError(f"image {path} not found; check the path")
        name = str(path)
    try:
        image = Image.open(path)
    except Image.DecompressionBombError:
        image = None
    except _BROKEN as e:
        raise DataError(f"{name} is not a readable image ({e}); delete or replace it") from None
    if image is None or image.width * image.height > MAX_PIXELS:
        raise DataError(f"{name} claims more than {MAX_PIXELS:,} pixels; "
                        "resize it to a few thousand pixels a side")
    return image


def _to_8bit(image: Image.Image) -> Image.Image:
    """16-bit and float greyscale to 8 bits by scaling the full range of the type (65535 or
    1.0 -> 255), where PIL's own conversion would clip everything above 255 to white."""
    if image.mode not in _WIDE:
        return image
    x = np.asarray(image).astype(np.float64)
    top = 1.0 if image.mode == "F" else 65535.0 if x.max() > 255 or "16" in image.mode else 255.0
    return Image.fromarray(np.clip(np.rint(x * (255.0 / top)), 0, 255).astype(np.uint8), "L")


def load_image(path: str | Path | bytes, size: int | None = None, channels: int = 3, *,
               name: str | None = None) -> torch.Tensor:
    """An image file (or its bytes, called `name` in errors) as uint8 [channels, H, W]
    (1 = greyscale, 3 = RGB; alpha is dropped), centre-cropped and resized to size x size unless
    size is None."""
    if channels not in (1, 3):
        raise ConfigError(f"channels = {channels} is not supported; use 1 (greyscale) or 3 (RGB)")
    if isinstance(path, bytes):
        source: Path | BinaryIO = io.BytesIO(path)
        name = name or "the image"
    else:
        source = Path(path)
    label = name or str(source)
    mode = "L" if channels == 1 else "RGB"
    with _open(source, name) as image:
        if size:
            image.draft(mode, (size, size))  # JPEG: decode at a reduced scale that is still >= size
        try:
            pixels = np.array(_to_8bit(image).convert(mode))
        except _BROKEN as e:
            raise DataError(f"{label} is corrupt or truncated ({e}); delete or replace "
                            "it") from None
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
