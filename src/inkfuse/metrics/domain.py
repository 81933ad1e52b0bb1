"""Domain metrics from the shipped MNIST / Fashion-MNIST classifiers.

- FD_cls: the Fréchet distance between samples and the real test set in the classifier's 128-d
  penultimate feature space (same formula as FID, other features). Cheap on a CPU, and it sees
  what matters for digits and clothes, where ImageNet Inception features are a poor fit.
- Accuracy of class-conditional samples: the share classified as the class they were asked for.

Real test statistics are computed once per process (10,000 images: seconds on a CPU).
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np
import torch

from inkfuse.config import DataConfig
from inkfuse.data import build_dataset
from inkfuse.errors import DataError
from inkfuse.metrics import classifier as cls
from inkfuse.metrics.fid import feature_stats, frechet_distance


@functools.lru_cache(maxsize=4)
def _real_stats(dataset: str, n: int) -> tuple[np.ndarray, np.ndarray]:
    test = build_dataset(DataConfig(name=dataset, split="test", size=cls.INPUT_SIZE,
                                    labels="none", limit=n))
    feats = cls.features(cls.load_classifier(dataset), test.images).double().numpy()
    return feature_stats(feats, f"{dataset} test features")


def fd_cls(images: Any, dataset: str, reference_n: int | None = None) -> float:
    """Fréchet distance between `images` and the real `dataset` test split (its first
    `reference_n` images; default all 10,000) in the classifier's feature space.
    images: uint8 or float in [-1, 1], [N, C, H, W] (resized to 28 x 28)."""
    if reference_n is not None and reference_n < 2:
        raise DataError(f"FD_cls needs at least 2 reference images, got {reference_n}")
    model = cls.load_classifier(dataset)
    feats = cls.features(model, images).double().numpy()
    mu, sigma = feature_stats(feats, "sample features")
    return frechet_distance(*_real_stats(dataset, reference_n or 0), mu, sigma)


def class_accuracy(images: Any, labels: Any, dataset: str) -> float:
    """The share of `images` that the `dataset` classifier assigns to the class in `labels`."""
    labels = torch.as_tensor(labels).reshape(-1).long()
    x = cls.prepare(images)
    if len(x) != len(labels):
        raise DataError(f"got {len(x)} images but {len(labels)} labels")
    if not len(x):
        raise DataError("class accuracy needs at least one image")
    pred = cls.predict(cls.load_classifier(dataset), x)
    return float((pred == labels).double().mean())


__all__ = ["class_accuracy", "fd_cls"]
