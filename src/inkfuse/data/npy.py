"""Images, and optionally labels, from .npy arrays (e.g. the course's 16x16 sprites).

Images: N x H x W x C (channels last, C = 1 or 3) or N x H x W, either integers in 0..255 or
floats in [0, 1], or in [-1, 1] when any value is negative. Labels: a 1-D integer array gives class
ids, a 2-D array gives context vectors (one-hot or multi-hot rows). Arrays are memory-mapped,
so `limit` reads only the rows it keeps, and loaded with allow_pickle=False: an object array
could run code when unpickled.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from inkfuse.data.dataset import ImageDataset
from inkfuse.errors import DataError


def _read(path: Path, key: str) -> np.ndarray:
    if not path.is_file():
        raise DataError(f"{path} not found; set {key} to an existing .npy file")
    try:
        array = np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError, EOFError) as e:
        raise DataError(f"{path} is not a numeric .npy array ({e}); use np.save") from None
    if not isinstance(array, np.ndarray):
        raise DataError(f"{path} is an .npz archive; save each array as its own .npy file")
    return array


def _to_uint8(pixels: np.ndarray, path: Path) -> np.ndarray:
    lo, hi = pixels.min(), pixels.max()
    if pixels.dtype.kind in "ui" and lo >= 0 and hi <= 255:
        return pixels.astype(np.uint8)
    if pixels.dtype.kind == "f" and lo >= -1 and hi <= 1:
        scaled = pixels * 255.0 if lo >= 0 else (pixels + 1.0) * 127.5
        return np.rint(scaled).astype(np.uint8)
    raise DataError(
        f"{path} has {pixels.dtype} pixels in {lo}..{hi}; "
        "use integers in 0..255 or floats in [0, 1] or [-1, 1]"
    )


def load(path: str | Path, labels_path: str | Path = "", limit: int = 0) -> ImageDataset:
    """Images uint8 [N, C, H, W] from `path`, with class ids or context vectors from
    `labels_path` if given."""
    path = Path(path)
    array = _read(path, "data.path")
    if array.ndim == 3:
        array = array[..., None]
    if array.ndim != 4 or array.shape[-1] not in (1, 3) or not len(array):
        raise DataError(
            f"{path} has shape {array.shape}; images must be N x H x W x C (C = 1 or 3) "
            "or N x H x W (transpose N x C x H x W arrays with np.transpose(a, (0, 2, 3, 1)))"
        )
    keep = slice(limit or None)
    images = torch.from_numpy(_to_uint8(np.asarray(array[keep]), path)).permute(0, 3, 1, 2)
    dataset = ImageDataset(images.contiguous(), name=path.stem)
    if not labels_path:
        return dataset
    labels_path = Path(labels_path)
    labels = _read(labels_path, "data.labels_path")
    if len(labels) != len(array):
        raise DataError(
            f"{labels_path} has {len(labels)} rows but {path} has {len(array)} images; "
            "they must match one to one"
        )
    if labels.ndim == 1 and labels.dtype.kind in "ui" and labels.min() >= 0:
        dataset.labels = torch.from_numpy(labels[keep].astype(np.int64))
        dataset.class_names = [str(i) for i in range(int(labels.max()) + 1)]
    elif labels.ndim == 2 and labels.dtype.kind in "buif":
        dataset.context = torch.from_numpy(labels[keep].astype(np.float32))
        dataset.context_names = [str(i) for i in range(labels.shape[1])]
    else:
        raise DataError(
            f"{labels_path} has shape {labels.shape} and dtype {labels.dtype}; use a 1-D array "
            "of class ids (integers >= 0) or a 2-D array of context vectors"
        )
    return dataset
