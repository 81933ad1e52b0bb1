"""Cascaded diffusion (Ho et al. 2021): a model that draws the large image given a small one.

The small image is enlarged (bilinear) to the output size and read beside x_t. Noise
conditioning augmentation: in training the small image is first noised by the forward process
to a random step s ≤ `max_level`·T and the model is told s, so it learns to treat the small
image as a noisy hint; a base model's samples, with their own artefacts, then read like one
more noisy hint instead of something to copy. At sampling s is a small fixed level.
"""

from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F
from torch import Tensor

from inkfuse.diffusion.conditioning import Condition
from inkfuse.diffusion.schedule import Schedule


def shrink(images: Tensor, size: int) -> Tensor:
    """Area downsampling: each low-res pixel is the mean of the block it covers."""
    return F.interpolate(images, size=(size, size), mode="area")


def enlarge(images: Tensor, size: int) -> Tensor:
    return F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False)


def with_low_res(cond: Condition | None, low: Tensor, size: int, level: Tensor,
                 schedule: Schedule, generator: torch.Generator | None = None) -> Condition:
    """`cond` plus the low-res images `low` ([B, C, h, w] in [-1, 1]) noised to steps `level`
    (0 = left clean) and enlarged to `size`."""
    noise = torch.randn(low.shape, generator=generator, device=low.device, dtype=low.dtype)
    clean = (level == 0).reshape(-1, 1, 1, 1)  # step 0 means no augmentation at all
    noisy = enlarge(torch.where(clean, low, schedule.q_sample(low, level, noise)), size)
    if cond is None:
        cond = Condition(None, torch.zeros(len(low), dtype=torch.bool, device=low.device))
    return dataclasses.replace(cond, low_res=noisy, low_res_t=level)


def training_levels(b: int, max_level: float, schedule: Schedule,
                    generator: torch.Generator | None, device: torch.device) -> Tensor:
    """Augmentation steps s ~ U{0 .. max_level·(T − 1)} for a batch."""
    top = int(max_level * (schedule.T - 1)) + 1
    return torch.randint(0, top, (b,), generator=generator, device=device)
