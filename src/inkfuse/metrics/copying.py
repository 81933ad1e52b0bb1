"""The copy check: are a model's samples new images, or its training images given back?

Each sample's distance to its nearest training image is compared with how close training
images are to each other. The statistic is

    copy share = P(d(sample, train) ≤ τ),   τ = the QUANTILE-quantile (5%) of d(x, train \\ {x})
                                             over training images x,

with d the L2 distance between images in [0, 1] (uint8 / 255) in pixel space. A model that
draws new images from the data distribution places its samples about as far from the training
set as a fresh real image: its share is about QUANTILE (`heldout_share`, the same statistic of
the real test images, shows the value to expect). A model that gives back training images
scores near 1, and one whose samples are off the data (noise) near 0. The train-to-train
distances are measured for `probes` training images against the whole training set (leaving
each one out), so the reference set is the same for samples and probes.

Distances are computed in chunks of queries against chunks of the training set, keeping a
running top-k, with the training set kept as uint8: 10k samples against 60k MNIST digits need
the 47 MB of the digits and a few [1024, 8192] blocks, never the full distance matrix.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from inkfuse.errors import DataError

QUANTILE = 0.05
SHOWN = 3  # nearest training images beside each sample in the grid


def nearest(queries: Tensor, refs: Tensor, k: int = 1, *, exclude: Tensor | None = None,
            chunk: int = 1024, ref_chunk: int = 8192) -> tuple[Tensor, Tensor]:
    """The k nearest rows of `refs` [M, D] to each row of `queries` [N, D] by L2 distance:
    (distances [N, k] ascending, float32, indices [N, k]). `exclude` [N] names one ref index
    per query that is never its neighbour (the query itself, for leave-one-out; −1 for none).

    Either may be uint8 (a training set stays one byte per value): each [chunk, ref_chunk]
    block is converted to float32 when its squared distances |q|² + |r|² − 2 q·r are formed;
    the k winners' distances are then recomputed directly, so a near-copy's distance is not
    lost to the cancellation of the expanded form."""
    if queries.ndim != 2 or refs.ndim != 2 or queries.shape[1] != refs.shape[1]:
        raise DataError(f"nearest neighbours need [N, D] and [M, D] arrays, got "
                        f"{tuple(queries.shape)} and {tuple(refs.shape)}")
    if not 1 <= k <= len(refs) - (exclude is not None):
        raise DataError(f"asked for {k} nearest neighbours among {len(refs)} training images")
    ref_sq = torch.cat([refs[i:i + ref_chunk].float().pow(2).sum(1)
                        for i in range(0, len(refs), ref_chunk)])
    best_d, best_i = [], []
    for lo in range(0, len(queries), chunk):
        q = queries[lo:lo + chunk].float()
        q_sq = q.pow(2).sum(1, keepdim=True)
        top_d = q.new_full((len(q), 0), math.inf)
        top_i = torch.zeros((len(q), 0), dtype=torch.long)
        for rlo in range(0, len(refs), ref_chunk):
            r = refs[rlo:rlo + ref_chunk].float()
            d2 = (q_sq + ref_sq[rlo:rlo + ref_chunk] - 2 * q @ r.T).clamp_(min=0)  # [q, r]
            idx = torch.arange(rlo, rlo + len(r)).expand(len(q), -1)
            if exclude is not None:
                d2 = d2.masked_fill(idx == exclude[lo:lo + chunk, None], math.inf)
            d2, idx = torch.cat([top_d, d2], 1), torch.cat([top_i, idx], 1)
            top_d, pick = d2.topk(min(k, d2.shape[1]), dim=1, largest=False)
            top_i = idx.gather(1, pick)
        exact = (q[:, None, :] - refs[top_i].float()).pow(2).sum(2).sqrt()  # [q, k]
        exact, order = exact.sort(1)
        best_d.append(exact)
        best_i.append(top_i.gather(1, order))
    return torch.cat(best_d), torch.cat(best_i)


@dataclass
class CopyReport:
    """What `copy_check` found. `distances`/`neighbours` [N, k]: each sample's nearest training
    images; `train_distances` [m]: the probes' leave-one-out nearest distances; `threshold` τ;
    `share` the copy share; `median_ratio` median sample distance / median train distance;
    `heldout_share` the copy share of real test images (None when none were given)."""

    distances: Tensor
    neighbours: Tensor
    train_distances: Tensor
    threshold: float
    share: float
    median_ratio: float
    heldout_share: float | None


def copy_check(samples: Tensor, train: Tensor, *, heldout: Tensor | None = None,
               quantile: float = QUANTILE, probes: int = 1000, k: int = SHOWN,
               seed: int = 0) -> CopyReport:
    """The copy share (module doc) of uint8 `samples` [N, C, H, W] against the `train` images
    [M, C, H, W], with `probes` random training images for the train-to-train distances and,
    given `heldout` test images, their share for comparison."""
    if samples.shape[1:] != train.shape[1:]:
        raise DataError(f"the samples are {tuple(samples.shape[1:])} but the training images "
                        f"are {tuple(train.shape[1:])}: compare images of one shape")
    if len(train) < 2:
        raise DataError("the copy check needs at least 2 training images")
    if not 0 < quantile < 1:
        raise DataError(f"the copy check's quantile must be in (0, 1), got {quantile}")
    refs = train.flatten(1)  # distances in uint8 units, divided by 255 below
    g = torch.Generator().manual_seed(seed)
    probe_idx = torch.randperm(len(train), generator=g)[:min(probes, len(train))]
    train_d, _ = nearest(refs[probe_idx], refs, 1, exclude=probe_idx)
    train_d = train_d[:, 0] / 255
    threshold = float(torch.quantile(train_d.double(), quantile))
    dist, idx = nearest(samples.flatten(1), refs, min(k, len(train)))
    dist = dist / 255
    share = float((dist[:, 0] <= threshold).double().mean())
    median_train = float(train_d.median())
    ratio = float(dist[:, 0].median()) / median_train if median_train > 0 else math.inf
    heldout_share = None
    if heldout is not None:
        held_d, _ = nearest(heldout.flatten(1), refs, 1)
        heldout_share = float((held_d[:, 0] / 255 <= threshold).double().mean())
    return CopyReport(dist, idx, train_d, threshold, share, ratio, heldout_share)


def neighbour_grid(samples: Tensor, train: Tensor, report: CopyReport,
                   rows: int = 16) -> tuple[Tensor, list[str]]:
    """The `rows` samples closest to a training image (the likeliest copies first), each
    followed by its nearest training images: uint8 [rows · (1 + k), C, H, W] for a grid
    (1 + k) wide, and one label per row (the nearest distance)."""
    order = report.distances[:, 0].argsort()[:rows]
    tiles = [torch.cat([samples[i:i + 1], train[report.neighbours[i]]]) for i in order.tolist()]
    labels = [f"d={report.distances[i, 0].item():.2f}" for i in order.tolist()]
    return torch.cat(tiles), labels


__all__ = ["QUANTILE", "CopyReport", "copy_check", "nearest", "neighbour_grid"]
