"""The one in-memory dataset type every loader returns.

Datasets here are small (tens of thousands of images at 16-128 px), so they live as one uint8
tensor on the training device: no per-step Python loader, no worker processes, and a batch is a
single index operation. Images convert to [-1, 1] floats only when a batch is drawn.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class CaptionVariants:
    """Several captions per image (texts[i][v]) and how likely training draws each variant v."""

    texts: list[list[str]]
    probs: torch.Tensor


@dataclass
class ImageDataset:
    """Images plus whatever each image is labelled with.

    images:   uint8 [N, C, H, W], already resized to the model's size.
    labels:   int64 [N] class ids, or None.
    context:  float32 [N, K] context vectors (one-hot or multi-hot attributes), or None.
    captions: one English caption per image, or None.
    class_names: names of the class ids (index = id).
    context_names: names of the context vector's entries.
    caption_variants: shorter captions to draw from in training instead of `captions`, or None.
    """

    images: torch.Tensor
    labels: torch.Tensor | None = None
    context: torch.Tensor | None = None
    captions: list[str] | None = None
    class_names: list[str] = field(default_factory=list)
    context_names: list[str] = field(default_factory=list)
    name: str = ""
    caption_variants: CaptionVariants | None = None

    def __len__(self) -> int:
        return self.images.shape[0]

    @property
    def channels(self) -> int:
        return self.images.shape[1]

    @property
    def size(self) -> int:
        return self.images.shape[-1]

    def to_float(self, idx: torch.Tensor | slice = slice(None)) -> torch.Tensor:
        """Images `idx` as float32 in [-1, 1]."""
        return self.images[idx].float().div_(127.5).sub_(1.0)

    def to(self, device: torch.device | str) -> ImageDataset:
        move = lambda t: None if t is None else t.to(device)  # noqa: E731
        return ImageDataset(
            move(self.images), move(self.labels), move(self.context), self.captions,
            self.class_names, self.context_names, self.name, self.caption_variants,
        )
