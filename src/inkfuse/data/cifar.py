"""CIFAR-10 from the original python-version tarball, read in place (no extraction).

The batches inside are pickles, and unpickling can run arbitrary code named by the file. A
downloaded file is checksummed first, but a file placed by hand might not be the real one, so
the batches are read with an unpickler that can build only what they contain: dicts, lists,
strings, ints and numpy arrays. Anything else fails with a DataError instead of running.
"""

from __future__ import annotations

import io
import pickle
import tarfile
import zlib
from pathlib import Path

import numpy as np
import torch

from inkfuse.data.dataset import ImageDataset
from inkfuse.data.download import Remote
from inkfuse.errors import DataError

FILE = Remote(
    "cifar-10-python.tar.gz",
    "c58f30108f718f92721af3b95e74349a",
    ("https://www.cs.toronto.edu/~kriz/",),
)
CLASS_NAMES = [
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
]
BATCHES = {
    "train": [f"cifar-10-batches-py/data_batch_{i}" for i in range(1, 6)],
    "test": ["cifar-10-batches-py/test_batch"],
}


_ALLOWED_GLOBALS = {  # what a pickled numpy array needs; nothing that can run code
    ("numpy.core.multiarray", "_reconstruct"),  # numpy < 2 (the original files)
    ("numpy._core.multiarray", "_reconstruct"),  # numpy >= 2
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("_codecs", "encode"),  # how Python 3's protocol 2 writes bytes
}


class _BatchUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if (module, name) not in _ALLOWED_GLOBALS:
            raise pickle.UnpicklingError(f"{module}.{name} is not allowed in a CIFAR batch")
        return super().find_class(module, name)


def read_batches(path: Path, members: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Images uint8 [N, 3, 32, 32] and labels of the named batches, in the order given."""
    found = {}
    broken = (tarfile.TarError, OSError, EOFError, zlib.error, pickle.UnpicklingError, ValueError)
    try:
        with tarfile.open(path, "r:gz") as tar:
            for member in tar:  # one pass: a gzip stream cannot seek back cheaply
                if member.isfile() and member.name in members:
                    raw = tar.extractfile(member).read()
                    # latin1 turns Python 2 byte strings into str keys and numpy-ready buffers
                    found[member.name] = _BatchUnpickler(io.BytesIO(raw), encoding="latin1").load()
    except broken as e:
        raise DataError(f"{path} is corrupt ({e}); delete it and fetch it again") from None
    missing = [m for m in members if m not in found]
    if missing:
        raise DataError(f"{path} is not the CIFAR-10 python tarball: it has no {missing[0]}")
    try:
        images = np.concatenate([np.asarray(found[m]["data"], np.uint8) for m in members])
        labels = np.concatenate([np.asarray(found[m]["labels"], np.int64) for m in members])
        return images.reshape(-1, 3, 32, 32), labels
    except (KeyError, TypeError, ValueError) as e:
        raise DataError(f"{path} is not the CIFAR-10 python tarball ({e})") from None


def load(folder: Path, split: str = "train", limit: int = 0) -> ImageDataset:
    """CIFAR-10 from `folder/cifar-10-python.tar.gz` (fetched if missing): uint8 [N, 3, 32, 32]
    images with int64 labels."""
    images, labels = read_batches(FILE.fetch(folder), BATCHES[split])
    keep = slice(limit or None)
    return ImageDataset(
        torch.from_numpy(images[keep]),
        labels=torch.from_numpy(labels[keep]),
        class_names=list(CLASS_NAMES),
        name="cifar10",
    )
