import numpy as np
import pytest
import torch

from inkfuse.config import DataConfig
from inkfuse.data import build_dataset
from inkfuse.errors import DataError


def _build(tmp_path, images, targets=None, **cfg):
    np.save(tmp_path / "x.npy", images)
    labels_path = ""
    if targets is not None:
        np.save(tmp_path / "y.npy", targets)
        labels_path = str(tmp_path / "y.npy")
    cfg.setdefault("labels", "none")
    return build_dataset(
        DataConfig(name="npy", path=str(tmp_path / "x.npy"), labels_path=labels_path, **cfg)
    )


def test_sprites_like_uint8_with_one_hot_context(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (12, 16, 16, 3), dtype=np.uint8)
    one_hot = np.eye(5)[rng.integers(0, 5, 12)]
    ds = _build(tmp_path, images, one_hot, size=16, labels="context")
    assert torch.equal(ds.images, torch.from_numpy(images).permute(0, 3, 1, 2))
    assert ds.context.dtype == torch.float32 and ds.context.shape == (12, 5)
    classes = _build(tmp_path, images, one_hot, size=16, labels="class", limit=5)
    assert classes.labels.tolist() == one_hot.argmax(1)[:5].tolist()
    assert len(classes) == 5 and classes.context is None


def test_float_ranges_and_greyscale(tmp_path):
    unit = np.linspace(0, 1, 2 * 8 * 8, dtype=np.float32).reshape(2, 8, 8)
    ds = _build(tmp_path, unit, size=8)
    assert ds.images.shape == (2, 1, 8, 8) and ds.images.max() == 255 and ds.images.min() == 0
    assert torch.equal(_build(tmp_path, unit * 2 - 1, size=8).images, ds.images)
    with pytest.raises(DataError, match=r"float32 pixels in 0.0..2.0"):
        _build(tmp_path, unit * 2, size=8)


def test_class_ids(tmp_path):
    ds = _build(tmp_path, np.zeros((4, 8, 8, 1), np.uint8), np.array([0, 2, 1, 2]), size=8,
                labels="class")
    assert ds.labels.tolist() == [0, 2, 1, 2] and ds.class_names == ["0", "1", "2"]
    one_hot = _build(tmp_path, np.zeros((4, 8, 8, 1), np.uint8), np.array([0, 2, 1, 2]), size=8,
                     labels="context")
    assert one_hot.context.argmax(1).tolist() == [0, 2, 1, 2]


def test_bad_arrays(tmp_path):
    images = np.zeros((4, 8, 8, 3), np.uint8)
    with pytest.raises(DataError, match=r"3 rows but .* has 4 images"):
        _build(tmp_path, images, np.arange(3))
    with pytest.raises(DataError, match=r"shape \(4, 3, 8, 8\)"):
        _build(tmp_path, images.transpose(0, 3, 1, 2))
    with pytest.raises(DataError, match="1-D array of class ids"):
        _build(tmp_path, images, np.array([0.5, 1, 2, 3]))
    with pytest.raises(DataError, match=r"not a numeric \.npy array"):
        _build(tmp_path, np.array([{"a": 1}] * 4, dtype=object))
    with pytest.raises(DataError, match="not found"):
        build_dataset(DataConfig(name="npy", path=str(tmp_path / "none.npy")))
    multi_hot = np.array([[1, 1, 0]] * 4)
    assert _build(tmp_path, images, multi_hot, labels="context").context.sum() == 8
    with pytest.raises(DataError, match="no class labels"):
        _build(tmp_path, images, multi_hot, labels="class")
