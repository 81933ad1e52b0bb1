"""An Imagen-style text encoder, small: a bidirectional transformer pretrained on captions alone
as a masked language model (BERT, Devlin et al. 2019), then frozen.

Imagen (Saharia et al. 2022) found that a frozen text-only encoder (T5) conditions a diffusion
model well: its U-Net cross-attends to the per-token states and adds their mean to the time
embedding. Here the encoder is `nn.clip.TextEncoder` without the causal mask, so every token's
state knows the whole prompt ("red" knows it is the circle's colour), and it learns from text
only: no images, no contrastive pairs. `encode_text_tokens` / `encode_text` have CLIP's
signatures, so `text.TextConditioner` reads either model.

Training hides tokens and predicts them (`mask_tokens`, `TextLM.mlm_loss`). The `<mask>` input is
one extra embedding row after the tokenizer's ids, so the tokenizer keeps its format; the
prediction head's output weights are the token embeddings themselves (tied, as BERT), so the
logits cover the tokenizer's vocabulary and never `<mask>`.
"""

from __future__ import annotations

from dataclasses import replace

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from inkfuse.config import TextLMModelConfig
from inkfuse.nn.clip import TextEncoder

MASK_SHARE, RANDOM_SHARE = 0.8, 0.1  # of the chosen tokens; the remaining 10 % stay as they are


def mask_tokens(ids: Tensor, mask: Tensor, mask_prob: float, mask_id: int,
                generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
    """BERT's corruption of a batch from `BPETokenizer.batch`: (inputs [B, L], chosen [B, L]).

    Only the text between `<sot>` (position 0) and `<eot>` (the last real position; `pack` lays
    every prompt out so) can be chosen: predicting a special token or a pad teaches nothing.
    Each of those is chosen with `mask_prob`, and the one with the lowest draw is chosen anyway,
    so every caption gives at least one target (a short prompt would often give none at 15 %).
    A chosen token becomes `mask_id` (80 %), a random token (10 %) or stays (10 %), so that the
    model cannot rely on seeing `<mask>` wherever it is asked. The random token is one drawn from
    the batch's own text: a uniform id would mostly be a byte no caption uses.

    Every draw has the shape [B, L] and comes from `generator`, so a step's corruption is fixed
    by its seed. A row without text (the empty prompt) has nothing chosen; a batch without any
    has nothing to predict and is refused."""
    b, length = ids.shape
    pos = torch.arange(length, device=ids.device)
    last = mask.sum(dim=1, keepdim=True) - 1  # [B, 1]: where <eot> is
    candidate = (pos > 0) & (pos < last)  # [B, L]
    if not candidate.any():
        raise ValueError("mask_tokens: no row has text between <sot> and <eot>, so there is "
                         "nothing to predict; train on non-empty captions")
    u = torch.rand(b, length, generator=generator, device=ids.device)
    u = u.masked_fill(~candidate, 2.0)  # never below mask_prob, never the row's minimum
    chosen = u < mask_prob
    chosen.scatter_(1, u.argmin(dim=1, keepdim=True), True)
    chosen &= candidate
    how = torch.rand(b, length, generator=generator, device=ids.device)
    pool = ids[candidate]  # [N]: every text token of the batch
    pick = torch.randint(len(pool), (b, length), generator=generator, device=ids.device)
    inputs = torch.where(chosen & (how < MASK_SHARE), mask_id, ids)
    inputs = torch.where(chosen & (how >= MASK_SHARE) & (how < MASK_SHARE + RANDOM_SHARE),
                         pool[pick], inputs)
    return inputs, chosen


class TextLM(nn.Module):
    """Bidirectional text encoder with a tied masked-LM head; `cfg.vocab_size` is the
    tokenizer's, and id `cfg.vocab_size` is `<mask>`."""

    def __init__(self, cfg: TextLMModelConfig, mask_prob: float = 0.15):
        super().__init__()
        self.cfg, self.mask_prob = cfg, mask_prob
        self.mask_id = cfg.vocab_size
        self.text = TextEncoder(replace(cfg, vocab_size=cfg.vocab_size + 1), causal=False)
        # BERT's init of the tied embedding: N(0, 1) rows would start the logits at a standard
        # deviation of sqrt(width), a loss far above log(vocab) before the first step
        nn.init.normal_(self.text.token.weight, std=0.02)
        # BERT's prediction head: a transform (dense, GELU, LayerNorm) before the tied output,
        # so the encoder's states need not be the embeddings themselves
        w = cfg.width
        self.head = nn.Sequential(nn.Linear(w, w), nn.GELU(), nn.LayerNorm(w))
        self.bias = nn.Parameter(torch.zeros(cfg.vocab_size))

    def encode_text_tokens(self, ids: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        """Per-token states [B, L, width] and the mask of real tokens [B, L]."""
        return self.text(ids, mask), mask

    def encode_text(self, ids: Tensor, mask: Tensor) -> Tensor:
        """ids, mask from `BPETokenizer.batch` -> unit vectors [B, width]: the mean of the real
        tokens' states (Imagen's pooling), <sot> and <eot> included, pads not."""
        tokens, _ = self.encode_text_tokens(ids, mask)
        weight = mask[..., None].to(tokens.dtype)  # [B, L, 1]
        pooled = (tokens * weight).sum(dim=1) / weight.sum(dim=1)  # [B, width]
        return F.normalize(pooled.float(), dim=-1)

    def predict(self, states: Tensor) -> Tensor:
        """Encoder states [..., width] -> logits [..., vocab_size] over the tokenizer's ids."""
        embedding = self.text.token.weight[:self.cfg.vocab_size]  # [V, width], <mask> left out
        return self.head(states) @ embedding.T + self.bias

    def mlm_logits(self, ids: Tensor, mask: Tensor, generator: torch.Generator | None = None
                   ) -> tuple[Tensor, Tensor]:
        """Corrupt the batch (`mask_tokens`), encode it: (logits [M, V], targets [M]) at the M
        chosen positions."""
        inputs, chosen = mask_tokens(ids, mask, self.mask_prob, self.mask_id, generator)
        states = self.text(inputs, mask)[chosen]  # [M, width]
        return self.predict(states), ids[chosen]

    def mlm_loss(self, ids: Tensor, mask: Tensor, generator: torch.Generator | None = None
                 ) -> Tensor:
        """Cross-entropy of the hidden tokens, averaged over the batch's chosen positions."""
        return F.cross_entropy(*self.mlm_logits(ids, mask, generator))

    def forward(self, ids: Tensor, mask: Tensor, generator: torch.Generator | None = None
                ) -> Tensor:
        """The loss of one batch of captions (what the training loop calls)."""
        return self.mlm_loss(ids, mask, generator)
