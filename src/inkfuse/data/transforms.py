"""Image transforms: resizing when a dataset is loaded, augmentation when a batch is drawn.

Augmentation runs on the whole float batch on the training device and draws its randomness from
an explicit `torch.Generator`, so a resumed run repeats exactly the flips and crops it would have
made.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def center_crop(images: torch.Tensor) -> torch.Tensor:
    """The largest centred square of images [..., H, W]."""
    h, w = images.shape[-2:]
    s = min(h, w)
    top, left = (h - s) // 2, (w - s) // 2
    return images[..., top : top + s, left : left + s]


def resize(images: torch.Tensor, size: int, chunk: int = 4096) -> torch.Tensor:
    """Centre-crop uint8 images [N, C, H, W] to a square and resize them to `size` x `size`.

    Bilinear with antialiasing, so shrinking averages over the covered area (like PIL's BILINEAR)
    instead of aliasing. Works in chunks: small float batches are both faster on CPU and bounded
    in memory (CIFAR-10 at 64 px would be 2.4 GB of floats at once).
    """
    images = center_crop(images)
    if images.shape[-1] == size:
        return images.contiguous()
    return torch.cat([
        F.interpolate(c.float(), size=(size, size), mode="bilinear", antialias=True)
        .round_().clamp_(0, 255).to(torch.uint8)
        for c in images.split(chunk)
    ])


def augment(
    x: torch.Tensor, *, hflip: bool, crop_padding: int, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Random horizontal flips, then random crops, of a float batch [B, C, H, W] in [-1, 1].

    Crops pad by `crop_padding` with -1 (black) on every side and cut a random H x W window, as
    torchvision's RandomCrop(padding=p) does with its zero padding of [0, 255] images. The
    generator must live on x's device; nothing is drawn for a disabled transform.
    """
    b, c, h, w = x.shape
    device = x.device
    if hflip:
        flip = torch.rand(b, generator=generator, device=device) < 0.5
        x = torch.where(flip.view(b, 1, 1, 1), x.flip(-1), x)
    if crop_padding:
        p = crop_padding
        padded = F.pad(x, (p, p, p, p), value=-1.0)
        top, left = torch.randint(0, 2 * p + 1, (2, b, 1, 1, 1), generator=generator, device=device)
        rows = top + torch.arange(h, device=device).view(h, 1)  # [B, 1, H, 1]: source row per row
        x = padded.gather(2, rows.expand(b, c, h, w + 2 * p))
        cols = left + torch.arange(w, device=device)  # [B, 1, 1, W]
        x = x.gather(3, cols.expand(b, c, h, w))
    return x
