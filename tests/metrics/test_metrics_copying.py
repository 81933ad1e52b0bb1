"""The copy check: nearest neighbours against brute force, and the copy share on a model that
gives back its training images (1), on noise (0) and on fresh draws of the data (≈ 5%)."""

from __future__ import annotations

import math

import pytest
import torch

from inkfuse.errors import DataError
from inkfuse.metrics import copying

pytestmark = pytest.mark.usefixtures("one_thread")


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_nearest_matches_brute_force_across_chunks():
    q, r = torch.randn(23, 6, generator=gen()), torch.randn(41, 6, generator=gen(1))
    d, i = copying.nearest(q, r, 3, chunk=7, ref_chunk=5)
    full = torch.cdist(q.double(), r.double())
    want_d, want_i = full.topk(3, dim=1, largest=False)
    assert torch.equal(i, want_i) and torch.allclose(d.double(), want_d, atol=1e-5)
    # leave-one-out: each point's nearest other point, never itself
    d, i = copying.nearest(r, r, 1, exclude=torch.arange(41), chunk=8, ref_chunk=16)
    full = torch.cdist(r.double(), r.double()).fill_diagonal_(math.inf)
    assert torch.equal(i[:, 0], full.argmin(1))
    with pytest.raises(DataError, match="asked for 5 nearest neighbours among 4"):
        copying.nearest(q, r[:4], 5)


def test_a_near_copy_keeps_its_small_distance():
    """|q|² + |r|² − 2 q·r loses a near-copy's distance to cancellation; the recomputed one
    does not."""
    r = torch.rand(10, 3072, generator=gen()) * 100
    q = r[3:4] + 1e-3
    d, i = copying.nearest(q, r, 1)
    assert i.item() == 3 and d.item() == pytest.approx(1e-3 * math.sqrt(3072), rel=1e-3)


def images(n: int, seed: int) -> torch.Tensor:
    """Blurry blobs: smooth 8x8 grey images, so that neighbours are meaningful."""
    low = torch.rand(n, 1, 3, 3, generator=gen(seed))
    up = torch.nn.functional.interpolate(low, size=8, mode="bilinear", align_corners=True)
    return (up * 255).round().to(torch.uint8)


def test_copies_score_one_noise_zero_and_new_images_about_the_quantile():
    train = images(1000, 0)
    copies = copying.copy_check(train[torch.randperm(1000, generator=gen(1))[:200]], train)
    assert copies.share == 1.0 and copies.distances[:, 0].max() == 0
    noise = torch.randint(0, 256, (200, 1, 8, 8), generator=gen(2), dtype=torch.uint8)
    assert copying.copy_check(noise, train).share == 0.0
    fresh = copying.copy_check(images(2000, 3), train, heldout=images(2000, 4), probes=1000)
    # binomial: 5% of 2000 has a standard deviation of 0.5%
    assert abs(fresh.share - copying.QUANTILE) < 0.025
    assert abs(fresh.heldout_share - copying.QUANTILE) < 0.025
    assert 0.8 < fresh.median_ratio < 1.25


def test_the_grid_puts_the_likeliest_copies_first():
    train = images(50, 0)
    samples = torch.cat([images(3, 5), train[7:8]])
    report = copying.copy_check(samples, train)
    tiles, labels = copying.neighbour_grid(samples, train, report, rows=2)
    assert tiles.shape == (2 * (1 + copying.SHOWN), 1, 8, 8)
    assert torch.equal(tiles[0], train[7]) and torch.equal(tiles[1], train[7])
    assert labels[0] == "d=0.00"


def test_images_of_another_shape_are_refused():
    with pytest.raises(DataError, match=r"the samples are \(3, 8, 8\) but the training images"):
        copying.copy_check(torch.zeros(2, 3, 8, 8, dtype=torch.uint8), images(5, 0))
