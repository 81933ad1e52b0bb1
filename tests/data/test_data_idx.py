import gzip
import shutil
import struct

import pytest
import torch

from inkfuse.config import DataConfig
from inkfuse.data import build_dataset, fetch
from inkfuse.data.idx import read_idx
from inkfuse.errors import DataError

MNIST_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]


def test_mnist_train(shared_data):
    ds = build_dataset(DataConfig(name="mnist", size=28))
    assert ds.images.shape == (60000, 1, 28, 28) and ds.images.dtype == torch.uint8
    assert torch.bincount(ds.labels).tolist() == MNIST_COUNTS
    assert ds.class_names == [str(d) for d in range(10)]


def test_fashion_mnist_both_splits(shared_data):
    train = build_dataset(DataConfig(name="fashion-mnist", size=28))
    test = build_dataset(DataConfig(name="fashion-mnist", split="test", size=28))
    assert train.images.shape == (60000, 1, 28, 28) and test.images.shape == (10000, 1, 28, 28)
    assert torch.bincount(train.labels).tolist() == [6000] * 10
    assert torch.bincount(test.labels).tolist() == [1000] * 10
    assert train.class_names[0] == "T-shirt/top" and train.class_names[9] == "Ankle boot"


def test_resize_limit_and_context(shared_data):
    ds = build_dataset(DataConfig(name="mnist", split="test", size=32, limit=500, labels="context"))
    assert ds.images.shape == (500, 1, 32, 32) and ds.labels is None
    assert ds.context.shape == (500, 10) and (ds.context.sum(1) == 1).all()
    assert ds.context_names == [str(d) for d in range(10)]
    assert fetch("mnist") == shared_data / "mnist"


def test_corrupt_copy_is_refused(shared_data, tmp_path):
    (tmp_path / "mnist").mkdir()
    for name in ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):
        shutil.copy(shared_data / "mnist" / name, tmp_path / "mnist" / name)
    with open(tmp_path / "mnist" / "t10k-labels-idx1-ubyte.gz", "r+b") as f:
        f.truncate(1000)
    cfg = DataConfig(name="mnist", split="test")
    with pytest.raises(DataError, match=r"t10k-labels-idx1-ubyte.gz is corrupt.*delete it"):
        build_dataset(cfg, data_dir=tmp_path)


def test_missing_file_offline_names_the_path(tmp_path):
    with pytest.raises(DataError) as e:
        build_dataset(DataConfig(name="fashion-mnist"), data_dir=tmp_path)
    message = str(e.value)
    assert f"train-images-idx3-ubyte.gz not found in {tmp_path / 'fashion-mnist'}" in message
    assert "http://fashion-mnist.s3-website" in message and "\n" not in message


def _gzip(path, data: bytes):
    path.write_bytes(gzip.compress(data))
    return path


def test_read_idx(tmp_path):
    header = struct.pack(">4B2I", 0, 0, 8, 2, 2, 3)
    assert read_idx(_gzip(tmp_path / "ok.gz", header + bytes(range(6)))).tolist() == [
        [0, 1, 2], [3, 4, 5]
    ]
    with pytest.raises(DataError, match="header says"):
        read_idx(_gzip(tmp_path / "short.gz", header + bytes(5)))
    with pytest.raises(DataError, match="IDX header"):
        read_idx(_gzip(tmp_path / "float.gz", struct.pack(">4BI", 0, 0, 0x0D, 1, 1) + bytes(4)))
    cut = tmp_path / "cut.gz"
    cut.write_bytes(gzip.compress(header + bytes(6))[:-6])
    with pytest.raises(DataError, match="not a readable gzip"):
        read_idx(cut)
