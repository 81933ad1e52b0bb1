"""MNIST and Fashion-MNIST from their original IDX files.

Files keep their upstream names under `<data dir>/<name>/` (`train-images-idx3-ubyte.gz`, ...),
so copies from torchvision, Debian's dataset packages or the original sites all work as they are.
Decoding is one gunzip and one `np.frombuffer`: 60,000 images load in well under a second.
"""

from __future__ import annotations

import gzip
import math
import struct
import zlib
from pathlib import Path

import numpy as np
import torch

from inkfuse.data.dataset import ImageDataset
from inkfuse.data.download import Remote
from inkfuse.errors import DataError

_MIRRORS = {
    "mnist": ("https://ossci-datasets.s3.amazonaws.com/mnist/", "http://yann.lecun.com/exdb/mnist/"),
    "fashion-mnist": ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
}
_MD5 = {  # the official checksums (see shared/data/PROVENANCE.md)
    "mnist": {
        "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
        "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
        "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
        "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
    },
    "fashion-mnist": {
        "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
        "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
        "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
        "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
    },
}
FILES = {
    name: {fn: Remote(fn, md5, _MIRRORS[name]) for fn, md5 in files.items()}
    for name, files in _MD5.items()
}
CLASS_NAMES = {
    "mnist": [str(d) for d in range(10)],
    "fashion-mnist": [
        "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
        "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
    ],
}
_PREFIX = {"train": "train", "test": "t10k"}


def read_idx(path: Path) -> np.ndarray:
    """A gzipped IDX file of unsigned bytes (header: 0, 0, type 0x08, ndim, ndim big-endian
    uint32 sizes) as an array of that shape."""
    again = "delete it and fetch it again"
    try:
        data = gzip.decompress(path.read_bytes())
    except (OSError, EOFError, zlib.error) as e:  # BadGzipFile is an OSError
        raise DataError(f"{path} is not a readable gzip file ({e}); {again}") from None
    ndim = data[3] if len(data) >= 4 else 0
    if data[:3] != b"\x00\x00\x08" or not 1 <= ndim <= 3 or len(data) < 4 + 4 * ndim:
        raise DataError(f"{path} does not start with a uint8 IDX header; {again}")
    shape = struct.unpack(f">{ndim}I", data[4 : 4 + 4 * ndim])
    body = np.frombuffer(data, np.uint8, offset=4 + 4 * ndim)
    if body.size != math.prod(shape):
        raise DataError(f"{path} has {body.size} data bytes but its header says {shape}; {again}")
    return body.reshape(shape)


def load(folder: Path, name: str, split: str = "train", limit: int = 0) -> ImageDataset:
    """`name` ("mnist" or "fashion-mnist") from `folder`, fetching missing files: uint8
    [N, 1, 28, 28] images with int64 class labels."""
    prefix = _PREFIX[split]
    images, labels = (
        read_idx(FILES[name][f"{prefix}-{kind}-ubyte.gz"].fetch(folder))
        for kind in ("images-idx3", "labels-idx1")
    )
    if images.ndim != 3 or labels.ndim != 1 or len(labels) != len(images):
        raise DataError(
            f"{folder}: images {images.shape} and labels {labels.shape} do not match; "
            "delete the files and fetch them again"
        )
    keep = slice(limit or None)
    return ImageDataset(
        torch.from_numpy(images[keep].copy()).unsqueeze(1),
        labels=torch.from_numpy(labels[keep].astype(np.int64)),
        class_names=list(CLASS_NAMES[name]),
        name=name,
    )
