"""One value for everything a sample can be conditioned on.

Class ids become one-hot vectors, so class labels, multi-hot attribute vectors, mixtures of
contexts (0.5 hero + 0.5 food) and pooled CLIP embeddings all enter the U-Net through the same
linear embedding. Text may also bring per-token features (`tokens`, with `mask` marking the real
tokens) for the U-Net to cross-attend to. `drop` marks the samples that see the model's null
condition instead: training drops at random (the Bernoulli mask of classifier-free guidance),
sampling drops all of the unconditional branch.

The null condition is the model's business only in one case: class and context models learn a
null embedding, so the network reads `drop` itself. Text models use the empty prompt's encoding
as their null (as Stable Diffusion does), which comes from the frozen text encoder and not from
the weights; `with_null` writes it into the dropped rows before the network sees the batch, so
the network only ever sees tensors and never holds a text encoder's output.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

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

    def with_null(self, null: Condition) -> Condition:
        """Dropped rows replaced by `null` (one row: the empty prompt's encoding), none dropped.

        Token features and mask are zero-padded, or cut, to this batch's token length first, so
        that one null fits batches of any padded length; zero mask entries keep the padding out
        of cross-attention. The low-res image of super-resolution is kept, never dropped."""
        d = self.drop
        return Condition(_pick(d, self.vector, null.vector), torch.zeros_like(d),
                         _pick(d, self.tokens, null.tokens, seq=True),
                         _pick(d, self.mask, null.mask, seq=True), self.low_res, self.low_res_t)

    def expand(self, n: int) -> Condition:
        """A one-row condition as n rows (views, no copies): the null of an unconditional call."""
        return self._map(lambda t: t.expand(n, *t.shape[1:]))

    def inputs(self) -> dict[str, Tensor]:
        """The tensors a network reads, as keyword arguments named like the fields (unset
        fields left out): networks take tensors, not this class, so they stay below it."""
        return {f.name: v for f in fields(self) if (v := getattr(self, f.name)) is not None}

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


def _pick(drop: Tensor, value: Tensor | None, null: Tensor | None,
          seq: bool = False) -> Tensor | None:
    """`value` [B, ...] with the rows where `drop` [B] is set taken from `null` [1, ...]."""
    if value is None:
        return None
    if null is None:
        raise ValueError("the null condition lacks a part that the batch has (pooled vector or "
                         "tokens): encode the empty prompt with the same text conditioner")
    null = null[0].to(value.device)
    if seq:  # tokens [L, W] and mask [L]: zero-pad (or cut padding) to the batch's length
        fitted = null.new_zeros((value.shape[1], *null.shape[1:]))
        n = min(len(null), value.shape[1])
        fitted[:n] = null[:n]
        null = fitted
    d = drop.reshape(-1, *[1] * (value.ndim - 1))
    return torch.where(d, null.to(value.dtype), value)
