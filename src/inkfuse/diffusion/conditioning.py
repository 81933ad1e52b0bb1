"""One value for everything a sample can be conditioned on.

Class ids become one-hot vectors, so class labels, multi-hot attribute vectors and mixtures of
contexts (0.5 hero + 0.5 food) all enter the U-Net through the same linear embedding. `drop`
marks the samples that see the learned null embedding instead: training drops at random (the
Bernoulli mask of classifier-free guidance), sampling drops all of the unconditional branch.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from inkfuse.errors import ConfigError


@dataclass
class Condition:
    vector: Tensor  # [B, K] one-hot, multi-hot or mixed context
    drop: Tensor  # [B] bool: True = use the null embedding

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
        return self.vector.shape[0]

    def null_like(self) -> Condition:
        """The same batch with every condition dropped (the unconditional branch of CFG)."""
        return Condition(self.vector, torch.ones_like(self.drop))

    def dropped(self, p: float, generator: torch.Generator | None = None) -> Condition:
        """Drop each sample's condition with probability p (classifier-free guidance training)."""
        u = torch.rand(len(self), generator=generator, device=self.drop.device)
        return Condition(self.vector, self.drop | (u < p))

    def to(self, device: torch.device | str) -> Condition:
        return Condition(self.vector.to(device), self.drop.to(device))

    def __getitem__(self, idx: Tensor | slice) -> Condition:
        return Condition(self.vector[idx], self.drop[idx])

    @staticmethod
    def cat(conds: list[Condition]) -> Condition:
        return Condition(torch.cat([c.vector for c in conds]), torch.cat([c.drop for c in conds]))
