import numpy as np
import pytest
import torch
from PIL import Image

from inkfuse.config import DataConfig
from inkfuse.data import build_dataset
from inkfuse.data.folder import load_image
from inkfuse.errors import DataError


def _save(path, colour, size=(20, 12), mode="RGB"):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, colour).save(path)
    return path


def test_class_subfolders(tmp_path):
    _save(tmp_path / "dogs" / "a.png", (0, 0, 255))
    _save(tmp_path / "cats" / "b.jpg", (255, 0, 0), size=(9, 30))
    _save(tmp_path / "cats" / "a.webp", (0, 255, 0))
    (tmp_path / "cats" / "notes.txt").write_text("not an image")
    ds = build_dataset(DataConfig(name="folder", path=str(tmp_path), size=8))
    assert ds.images.shape == (3, 3, 8, 8) and ds.class_names == ["cats", "dogs"]
    assert ds.labels.tolist() == [0, 0, 1]
    green = torch.tensor([0, 255, 0])
    assert (ds.images[0, :, 4, 4] - green).abs().max() <= 2  # cats/a.webp (lossy) comes first
    assert ds.images[2, :, 4, 4].tolist() == [0, 0, 255]


def test_flat_greyscale_folder(tmp_path):
    for i in range(3):
        _save(tmp_path / f"{i}.png", 80 * i, mode="L")
    ds = build_dataset(DataConfig(name="folder", path=str(tmp_path), size=16, labels="none"))
    assert ds.images.shape == (3, 1, 16, 16) and ds.labels is None
    assert ds.images[:, 0, 0, 0].tolist() == [0, 80, 160]
    with pytest.raises(DataError, match="no class labels"):
        build_dataset(DataConfig(name="folder", path=str(tmp_path), labels="class"))


def test_bad_folders(tmp_path):
    cfg = DataConfig(name="folder", path=str(tmp_path), labels="none")
    with pytest.raises(DataError, match=f"{tmp_path} has no images"):
        build_dataset(cfg)
    broken = _save(tmp_path / "broken.png", (1, 2, 3), size=(64, 64))
    broken.write_bytes(broken.read_bytes()[:60])
    with pytest.raises(DataError, match=f"{broken} is corrupt or truncated"):
        build_dataset(cfg)
    broken.unlink()
    (tmp_path / "junk.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(DataError, match=r"junk\.jpg is not a readable image"):
        build_dataset(cfg)
    with pytest.raises(DataError, match=r"image folder '.*nowhere' not found"):
        build_dataset(DataConfig(name="folder", path=str(tmp_path / "nowhere")))


def test_load_image_centre_crops(tmp_path):
    pixels = np.zeros((10, 30, 3), np.uint8)
    pixels[:, :10] = (255, 0, 0)
    pixels[:, 10:20] = (0, 255, 0)
    pixels[:, 20:] = (0, 0, 255)
    Image.fromarray(pixels).save(tmp_path / "strip.png")
    x = load_image(tmp_path / "strip.png", 5)
    assert x.shape == (3, 5, 5) and (x == torch.tensor([0, 255, 0]).view(3, 1, 1)).all()
    assert load_image(tmp_path / "strip.png").shape == (3, 10, 30)
    assert load_image(tmp_path / "strip.png", 5, channels=1).shape == (1, 5, 5)
    with pytest.raises(DataError, match=f"image {tmp_path / 'gone.png'} not found"):
        load_image(tmp_path / "gone.png", 5)


def test_sixteen_bit_and_palette_pngs_are_scaled_not_clipped(tmp_path) -> None:


    wide = (np.arange(256).reshape(16, 16) * 257).astype(np.uint16)  # the full 16-bit range
    Image.fromarray(wide).save(tmp_path / "g16.png")
    assert torch.equal(load_image(tmp_path / "g16.png", channels=1)[0],
                       torch.arange(256, dtype=torch.uint8).view(16, 16))
    palette = Image.fromarray(np.zeros((4, 4), np.uint8), "P")
    palette.putpalette([10, 20, 30] * 256)
    palette.save(tmp_path / "p.png")
    assert load_image(tmp_path / "p.png")[:, 0, 0].tolist() == [10, 20, 30]


def test_an_image_that_claims_too_many_pixels_is_refused_before_decoding(tmp_path) -> None:
    import struct
    import zlib


    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))

    header = struct.pack(">IIBBBBB", 70000, 70000, 8, 0, 0, 0, 0)  # 4.9 gigapixels, a few bytes
    (tmp_path / "bomb.png").write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
                                        + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b""))
    with pytest.raises(DataError, match="claims more than"):
        load_image(tmp_path / "bomb.png")
