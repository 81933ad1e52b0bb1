import io
import pickle
import tarfile

import numpy as np
import pytest
import torch

from inkfuse.config import DataConfig
from inkfuse.data import build_dataset, cifar
from inkfuse.data.download import Remote, digest
from inkfuse.errors import DataError


def _tarball(path, batches: dict[str, object]):
    """A tarball laid out like cifar-10-python.tar.gz, with pickles like the original's."""
    with tarfile.open(path, "w:gz") as tar:
        for name, obj in batches.items():
            raw = pickle.dumps(obj, protocol=2)
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(raw)
            tar.addfile(info, io.BytesIO(raw))
    return path


def _batch(first: int, n: int = 3):
    data = np.arange(first, first + n, dtype=np.uint8).repeat(3072).reshape(n, 3072)
    return {"batch_label": "x", "labels": list(range(first, first + n)), "data": data,
            "filenames": [f"{i}.png".encode() for i in range(n)]}


@pytest.fixture
def tarball(tmp_path, monkeypatch):
    """A synthetic CIFAR-10 in tmp_path/cifar10, registered under the real file's name."""
    (tmp_path / "cifar10").mkdir()
    batches = {f"data_batch_{i}": _batch(3 * (i - 1)) for i in range(1, 6)}
    path = _tarball(tmp_path / "cifar10" / cifar.FILE.filename, {
        "batches.meta": {"label_names": cifar.CLASS_NAMES}, **batches, "test_batch": _batch(7)
    })
    monkeypatch.setattr(cifar, "FILE", Remote(cifar.FILE.filename, digest(path, "0" * 32), ()))
    return tmp_path


def test_reads_the_original_layout(tarball):
    train = build_dataset(DataConfig(name="cifar10", size=32), data_dir=tarball)
    assert train.images.shape == (15, 3, 32, 32) and train.labels.tolist() == list(range(15))
    assert train.labels.dtype == torch.int64 and train.class_names[0] == "airplane"
    assert (train.images[4] == 4).all()
    test = build_dataset(DataConfig(name="cifar10", split="test", size=16), data_dir=tarball)
    assert test.images.shape == (3, 3, 16, 16) and test.labels.tolist() == [7, 8, 9]


def test_refuses_code_in_a_pickle(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("this must never run",))

    path = _tarball(tmp_path / "evil.tar.gz", {"test_batch": {"data": Evil()}})
    with pytest.raises(DataError, match=r"print is not allowed"):
        cifar.read_batches(path, cifar.BATCHES["test"])


def test_missing_batch_and_corrupt_archive(tmp_path):
    path = _tarball(tmp_path / "part.tar.gz", {"data_batch_1": _batch(0)})
    with pytest.raises(DataError, match="has no cifar-10-batches-py/data_batch_2"):
        cifar.read_batches(path, cifar.BATCHES["train"])
    cut = tmp_path / "cut.tar.gz"
    cut.write_bytes(path.read_bytes()[:200])
    with pytest.raises(DataError, match="is corrupt"):
        cifar.read_batches(cut, cifar.BATCHES["train"])


def test_missing_tarball_offline(tmp_path):
    with pytest.raises(DataError, match=r"cifar-10-python\.tar\.gz not found in .*cifar10"):
        build_dataset(DataConfig(name="cifar10"), data_dir=tmp_path)
