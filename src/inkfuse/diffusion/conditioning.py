"""One value for everything a sample can be conditioned on.

Class ids become one-hot vectors, so class labels, multi-hot attribute vectors, mixtures of
contexts (0.5 hero + 0.5 food) and pooled CLIP embeddings all enter the U-Net through the same
linear embedding. Text may also bring per-token features (`tokens`, with `mask` marking the real
tokens) for the U-Net to cross-attend to. `drop` marks the samples that see the model's null
condition instead: training drops at random (the Bernoulli mask of classifier-free guidance),
sampling drops all of the unconditional branch.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from inkfuse.errors import ConfigError


@dataclass
class Condition:
    vector: Tensor | None  # [B, K] one-hot, multi-hot, mixed context or pooled text embedding
    drop: Tensor  # [B] bool: True = use the null condition
    tokens: Tensor | None = None  # [B, L, W] per-token text features (cross-attention)
    mask: Tensor | None = None  # [B, L] bool: True = a real token, False = padding
    low_res: Tensor | None = None  # [B, C, H, W] the image to upsample, enlarged and noised
    low_res_t: Tensor | None = None  # [B] the step its noise corresponds to

    @classmethod
    def from_labels(cls, labels: Tensor, num_classes: int) -> Condition:
        if labels.numel() and (labels.min() < 0 or labels.max() >= num_classes):
            bad = labels[(labels < 0) | (labels >= num_classes)][0].item()
            raise ConfigError(f"class id {bad} is out of range: "
                              f"this model has classes 0..{num_classes - 1}")
        return cls.from_vectors(F.one_hot(labels.long(), num_classes).float())

    @classmethod
    def from_vectors(cls, vectors: Tensor) -> Condition:
        vectors = vectors.float()
        return cls(vectors, torch.zeros(vectors.shape[0], dtype=torch.bool, device=vectors.device))

    def __len__(self) -> int:
        return self.drop.shape[0]

    def _with(self, drop: Tensor) -> Condition:
        """The same condition with another drop mask: the low-res image is never dropped."""
        return Condition(self.vector, drop, self.tokens, self.mask, self.low_res, self.low_res_t)

    def null_like(self) -> Condition:
        """The same batch with every condition dropped (the unconditional branch of CFG)."""
        return self._with(torch.ones_like(self.drop))

    def dropped(self, p: float, generator: torch.Generator | None = None) -> Condition:
        """Drop each sample's condition with probability p (classifier-free guidance training)."""
        u = torch.rand(len(self), generator=generator, device=self.drop.device)
        return self._with(self.drop | (u < p))

    def _map(self, fn) -> Condition:
        keep = lambda t: None if t is None else fn(t)  # noqa: E731
        return Condition(keep(self.vector), fn(self.drop), keep(self.tokens), keep(self.mask),
                         keep(self.low_res), keep(self.low_res_t))

    def to(self, device: torch.device | str) -> Condition:
        return self._map(lambda t: t.to(device))

    def __getitem__(self, idx: Tensor | slice) -> Condition:
        return self._map(lambda t: t[idx])

    @staticmethod
    def cat(conds: list[Condition]) -> Condition:
        def join(name: str) -> Tensor | None:
            parts = [getattr(c, name) for c in conds]
            return None if parts[0] is None else torch.cat(parts)

        return Condition(join("vector"), join("drop"), join("tokens"), join("mask"),
                         join("low_res"), join("low_res_t"))
