"""The shipped domain classifiers: small files, load with safetensors, classify real test images;
FD_cls and class accuracy on real data."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from inkfuse.config import DataConfig
from inkfuse.data import build_dataset
from inkfuse.errors import ConfigError, DataError
from inkfuse.metrics import classifier as cls
from inkfuse.metrics import domain


@pytest.mark.parametrize("dataset, floor", [("mnist", 0.992), ("fashion-mnist", 0.91)])
def test_shipped_files_are_small_and_documented(dataset, floor):
    weights, info_path = cls.weights_paths(dataset)
    assert weights.stat().st_size < 1_000_000 and info_path.stat().st_size < 1_000_000
    info = json.loads(info_path.read_text())
    assert info["dataset"] == dataset and info["test_accuracy"] >= floor
    assert info["command"] == f"python scripts/train_classifier.py --dataset {dataset}"
    assert {"architecture", "date", "training"} <= set(info)
    assert weights.read_bytes()[8:9] == b"{"  # a safetensors header, not a pickle


@pytest.mark.parametrize("dataset, floor", [("mnist", 0.98), ("fashion-mnist", 0.88)])
def test_classifies_real_test_images(shared_data, dataset, floor):
    test = build_dataset(DataConfig(name=dataset, split="test", size=28, limit=500))
    model = cls.load_classifier(dataset)
    accuracy = (cls.predict(model, test.images) == test.labels).double().mean().item()
    assert accuracy >= floor
    assert domain.class_accuracy(test.images, test.labels, dataset) == pytest.approx(accuracy)
    feats = cls.features(model, test.images[:8])
    assert feats.shape == (8, 128) and torch.isfinite(feats).all()


def test_prepare_accepts_layouts_sizes_and_colour():
    gray = torch.randint(0, 256, (2, 1, 28, 28), dtype=torch.uint8)
    x = cls.prepare(gray)
    assert x.shape == (2, 1, 28, 28) and x.min() >= -1 and x.max() <= 1
    nhwc = gray.permute(0, 2, 3, 1).numpy()  # as in `inkfuse sample` .npz files
    assert torch.equal(cls.prepare(nhwc), x)
    assert torch.allclose(cls.prepare(gray.expand(-1, 3, -1, -1)), x)  # RGB -> mean
    assert cls.prepare(torch.zeros(3, 1, 32, 32)).shape == (3, 1, 28, 28)  # resized to 28
    with pytest.raises(DataError, match="needs images"):
        cls.prepare(torch.zeros(2, 2, 28, 28))
    with pytest.raises(DataError, match="uint8 images or floats"):
        cls.prepare(torch.zeros(2, 1, 28, 28, dtype=torch.int32))


def test_fd_cls_small_for_real_digits_large_for_clothes(shared_data):
    digits = build_dataset(DataConfig(name="mnist", split="test", size=28, limit=1000))
    clothes = build_dataset(DataConfig(name="fashion-mnist", split="test", size=28, limit=500))
    close = domain.fd_cls(digits.images[500:], "mnist", reference_n=500)
    far = domain.fd_cls(clothes.images, "mnist", reference_n=500)
    assert 0 <= close < 5 and far > 20 * close
    with pytest.raises(DataError, match="at least 2 reference images"):
        domain.fd_cls(digits.images[:4], "mnist", reference_n=1)


def test_missing_or_damaged_weights(tmp_path, monkeypatch):
    with pytest.raises(ConfigError, match="no domain classifier for dataset 'cifar10'"):
        cls.load_classifier("cifar10")
    monkeypatch.setattr(cls, "WEIGHTS_DIR", tmp_path)
    cls.load_classifier.cache_clear()
    try:
        with pytest.raises(DataError, match=r"mnist.json is missing; train it with"):
            cls.load_classifier("mnist")
        (tmp_path / "mnist.json").write_text(json.dumps({"architecture": cls.Classifier().arch}))
        (tmp_path / "mnist.safetensors").write_bytes(b"\x00" * 20)
        with pytest.raises(DataError, match=r"mnist.safetensors is damaged"):
            cls.load_classifier("mnist")
    finally:
        cls.load_classifier.cache_clear()


def test_class_accuracy_checks_lengths():
    with pytest.raises(DataError, match="3 images but 2 labels"):
        domain.class_accuracy(np.zeros((3, 28, 28, 1), np.uint8), [1, 2], "mnist")
