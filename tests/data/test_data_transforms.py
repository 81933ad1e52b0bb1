import torch

from inkfuse.data.transforms import augment, resize


def _batch(b=6, c=3, h=8, w=10):
    return torch.rand(b, c, h, w, generator=torch.Generator().manual_seed(0)) * 2 - 1


def test_flip_twice_is_identity_and_flips_some():
    x = _batch(64)
    once = augment(x, hflip=True, crop_padding=0, generator=torch.Generator().manual_seed(1))
    twice = augment(once, hflip=True, crop_padding=0, generator=torch.Generator().manual_seed(1))
    assert torch.equal(twice, x)
    flipped = (once != x).flatten(1).any(1)
    assert 0 < flipped.sum() < 64
    assert torch.equal(once[flipped], x[flipped].flip(-1))


def test_crop_matches_a_window_of_the_padded_image():
    x, p = _batch(), 3
    out = augment(x, hflip=False, crop_padding=p, generator=torch.Generator().manual_seed(2))
    assert out.shape == x.shape
    padded = torch.nn.functional.pad(x, (p, p, p, p), value=-1.0)
    for image, window in zip(padded, out, strict=True):
        assert any(
            torch.equal(image[:, i : i + 8, j : j + 10], window)
            for i in range(2 * p + 1) for j in range(2 * p + 1)
        )


def test_deterministic_with_generator():
    x = _batch(32)

    def run(seed):
        return augment(x, hflip=True, crop_padding=4, generator=torch.Generator().manual_seed(seed))

    assert torch.equal(run(3), run(3)) and not torch.equal(run(3), run(4))
    g = torch.Generator().manual_seed(5)
    state = g.get_state()
    assert augment(x, hflip=False, crop_padding=0, generator=g) is x
    assert torch.equal(g.get_state(), state)  # nothing drawn when nothing is enabled


def test_resize_crops_and_keeps_flat_images_flat():
    images = torch.full((2, 3, 12, 20), 77, dtype=torch.uint8)
    images[..., :4] = 0  # outside the centred 12 x 12 square
    for size in (6, 12, 30):
        out = resize(images, size)
        assert out.shape == (2, 3, size, size) and (out == 77).all()
