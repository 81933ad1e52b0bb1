import hashlib

import pytest

from inkfuse.data import data_dir
from inkfuse.data.download import fetch_file
from inkfuse.errors import DataError


@pytest.fixture
def source(tmp_path):
    """A file served by file:// URLs, its md5 and sha256, and a URL that does not exist."""
    path = tmp_path / "server" / "blob.bin"
    path.parent.mkdir()
    path.write_bytes(b"inkfuse" * 1000)
    data = path.read_bytes()
    return {
        "url": path.as_uri(), "missing": (tmp_path / "server" / "nope.bin").as_uri(),
        "md5": hashlib.md5(data).hexdigest(), "sha256": hashlib.sha256(data).hexdigest(),
    }


@pytest.mark.parametrize("algo", ["md5", "sha256"])
def test_download_tries_mirrors_in_order(source, tmp_path, monkeypatch, algo):
    monkeypatch.delenv("INKFUSE_OFFLINE")
    dest = tmp_path / "data" / "set" / "blob.bin"
    assert fetch_file([source["missing"], source["url"]], dest, source[algo]) == dest
    assert dest.read_bytes() == b"inkfuse" * 1000
    assert [p.name for p in dest.parent.iterdir()] == ["blob.bin"]  # no temporary file left


def test_download_with_wrong_checksum_leaves_nothing(source, tmp_path, monkeypatch):
    monkeypatch.delenv("INKFUSE_OFFLINE")
    dest = tmp_path / "set" / "blob.bin"
    with pytest.raises(DataError, match=r"blob.bin not found in .*checksum mismatch"):
        fetch_file([source["url"]], dest, "0" * 32)
    assert list(dest.parent.iterdir()) == []


def test_offline_message_says_where_to_put_the_file(source, tmp_path):
    dest = tmp_path / "set" / "blob.bin"
    with pytest.raises(DataError) as e:
        fetch_file([source["url"]], dest, source["md5"])
    assert str(e.value) == (
        f"blob.bin not found in {dest.parent} and download failed (downloads are off: "
        f"INKFUSE_OFFLINE is set); download it from {source['url']} and place it there, "
        "or set INKFUSE_DATA"
    )
    assert not dest.parent.exists()


def test_present_file_is_verified(source, tmp_path):
    dest = tmp_path / "blob.bin"
    dest.write_bytes(b"inkfuse" * 1000)
    assert fetch_file([], dest, source["sha256"]) == dest
    dest.write_bytes(b"inkfuse" * 999)
    with pytest.raises(DataError, match=f"{dest} is corrupt or truncated.*delete it"):
        fetch_file([], dest, source["sha256"])


def test_data_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("INKFUSE_DATA", str(tmp_path / "mine"))
    assert data_dir() == tmp_path / "mine"
    monkeypatch.delenv("INKFUSE_DATA")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert data_dir() == tmp_path / "xdg" / "inkfuse" / "data"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert data_dir() == tmp_path / ".cache" / "inkfuse" / "data"
