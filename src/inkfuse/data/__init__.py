"""Datasets: a registry from names to loaders, and `build_dataset`, the one way in.

Every loader returns an `ImageDataset` at its native resolution with whatever conditioning it
naturally has; `build_dataset` then resizes (centre crop, bilinear with antialiasing) and exposes
exactly the conditioning that `data.labels` asks for. Files of downloadable datasets live under
`data_dir()/<name>/` with their original names and are checksummed on every load.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from inkfuse.config import DataConfig
from inkfuse.data import cifar, folder, idx, npy, shapes
from inkfuse.data.dataset import ImageDataset
from inkfuse.data.download import Remote, data_dir
from inkfuse.data.transforms import resize
from inkfuse.errors import ConfigError, DataError

Loader = Callable[[DataConfig, Path, int], ImageDataset]  # (config, dataset folder, seed)


@dataclass(frozen=True)
class _Entry:
    description: str
    load: Loader
    files: tuple[Remote, ...] = ()  # what `fetch` downloads into <data dir>/<name>/


_DATASETS = {
    "shapes": _Entry(
        "coloured circles, squares, triangles and crosses with captions, generated from the seed",
        lambda cfg, root, seed: shapes.load(
            min(cfg.count, cfg.limit or cfg.count), cfg.size, seed, cfg.max_objects,
            cfg.caption_dropout, cfg.holdout, cfg.withhold,
        ),
    ),
    "mnist": _Entry(
        "handwritten digits 0-9, 60k train / 10k test, 28x28 grey (LeCun et al.)",
        lambda cfg, root, seed: idx.load(root, "mnist", cfg.split, cfg.limit),
        tuple(idx.FILES["mnist"].values()),
    ),
    "fashion-mnist": _Entry(
        "10 kinds of clothing, 60k train / 10k test, 28x28 grey (Zalando Research)",
        lambda cfg, root, seed: idx.load(root, "fashion-mnist", cfg.split, cfg.limit),
        tuple(idx.FILES["fashion-mnist"].values()),
    ),
    "cifar10": _Entry(
        "10 classes of small photos, 50k train / 10k test, 32x32 RGB (Krizhevsky)",
        lambda cfg, root, seed: cifar.load(root, cfg.split, cfg.limit),
        (cifar.FILE,),
    ),
    "folder": _Entry(
        "your images at data.path: one subfolder per class gives labels",
        lambda cfg, root, seed: folder.load(_user_path(cfg.path, root), cfg.size, cfg.limit),
    ),
    "npy": _Entry(
        "images in a .npy array at data.path, labels or context from data.labels_path",
        lambda cfg, root, seed: npy.load(_user_path(cfg.path, root),
                                         _user_path(cfg.labels_path, root), cfg.limit),
    ),
}


def list_datasets() -> list[tuple[str, str]]:
    """(name, one-line description) of every dataset `build_dataset` knows."""
    return [(name, entry.description) for name, entry in _DATASETS.items()]


def _entry(name: str) -> _Entry:
    if name not in _DATASETS:
        raise ConfigError(f"unknown dataset {name!r} (known: {', '.join(_DATASETS)})")
    return _DATASETS[name]


def fetch(name: str, data_dir: str | Path | None = None) -> Path:
    """Download (or verify) every file dataset `name` needs; returns its folder."""
    files = _entry(name).files
    if not files:
        raise DataError(f"{name!r} has nothing to download: it is generated or read from data.path")
    root = _root(data_dir) / name
    for remote in files:
        remote.fetch(root)
    return root


def build_dataset(
    cfg: DataConfig, data_dir: str | Path | None = None, seed: int = 0
) -> ImageDataset:
    """The dataset `cfg` describes, as uint8 [N, C, size, size] images plus the conditioning that
    cfg.labels selects: "class" -> labels, "context" -> context vectors, "none" -> neither.

    Class ids become one-hot context vectors when context is asked for, and one-hot context
    vectors become class ids, so any labelled dataset serves both kinds of model.
    """
    ds = _entry(cfg.name).load(cfg, _root(data_dir) / cfg.name, seed)
    ds = replace(ds, images=resize(ds.images, cfg.size))
    if cfg.labels == "class":
        return _as_classes(ds)
    if cfg.labels == "context":
        return _as_context(ds)
    return replace(ds, labels=None, context=None, class_names=[], context_names=[])


def _user_path(path: str, root: Path) -> str:
    """A relative data.path is looked up in the working directory, then in the data dir
    (so recipes can say `sprites/x.npy` for `$INKFUSE_DATA/sprites/x.npy`)."""
    if not path or Path(path).expanduser().is_absolute() or Path(path).exists():
        return path
    in_data_dir = root.parent / path
    return str(in_data_dir) if in_data_dir.exists() else path


def _root(given: str | Path | None) -> Path:
    return Path(given).expanduser() if given is not None else data_dir()


def _is_one_hot(context: torch.Tensor) -> bool:
    return bool(((context == 0) | (context == 1)).all() and (context.sum(1) == 1).all())


def _as_classes(ds: ImageDataset) -> ImageDataset:
    if ds.labels is None:
        if ds.context is None or not _is_one_hot(ds.context):
            raise DataError(
                f"dataset {ds.name!r} has no class labels; set data.labels = 'context' or 'none'"
            )
        ds = replace(ds, labels=ds.context.argmax(1), class_names=ds.context_names)
    return replace(ds, context=None, context_names=[])


def _as_context(ds: ImageDataset) -> ImageDataset:
    if ds.context is None:
        if ds.labels is None:
            raise DataError(
                f"dataset {ds.name!r} has no labels to build context vectors from; "
                "set data.labels = 'none'"
            )
        one_hot = torch.nn.functional.one_hot(ds.labels, len(ds.class_names)).float()
        ds = replace(ds, context=one_hot, context_names=ds.class_names)
    return replace(ds, labels=None, class_names=[])


__all__ = ["ImageDataset", "build_dataset", "data_dir", "fetch", "list_datasets"]
