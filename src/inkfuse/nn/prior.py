"""DALL-E 2's diffusion prior (Ramesh et al. 2022, §2.2), small: a transformer that denoises a
CLIP image embedding given a caption.

The sequence is, in order, the caption's CLIP token features (projected to the width), its
pooled CLIP text embedding, the timestep's embedding, the noised image embedding and a learned
query; the query's output is the prediction (x̂0: DALL-E 2 predicts the unnoised embedding
directly, `diffusion.target = "x0"`). Padding tokens are masked out as keys. DALL-E 2's
transformer is causal; here every position sees every other, since only the query's output is
read and the sequence is short. Each of the four single slots enters through its own projection
(or is its own parameter), so no position embedding is needed to tell them apart, and the token
features carry the CLIP's own positions.

The network sees only tensors: `forward(x, t, vector=, tokens=, mask=)` takes the keywords of
`Condition.inputs()`, so `diffusion.Denoiser` (its loss and its call, with the empty prompt's
encoding written into dropped rows) and every sampler work on its [B, D] vectors unchanged.

Embedding space. CLIP embeddings are unit vectors, so each of their D entries is about
1/sqrt(D) in size, while diffusion's noise has unit variance per entry: at that scale the
signal would drown at the first steps of the schedule and the schedule's SNR would mean
something else than for images. The prior therefore diffuses `to_prior_space(e) = sqrt(D) e`
(unit variance per entry, as the noise), and a sampled x̂0 goes back by `from_prior_space`,
which renormalises it to unit length: the decoder was trained on unit vectors only, and the
prior's sample is not exactly on the sphere (the mean of plausible embeddings lies inside it).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from inkfuse.config import PriorModelConfig
from inkfuse.nn.blocks import SinusoidalEmbedding
from inkfuse.nn.clip import TextBlock

SLOTS = 4  # pooled text, time, noised embedding, query: the positions after the tokens


def to_prior_space(embeddings: Tensor) -> Tensor:
    """Unit CLIP embeddings [B, D] -> the prior's diffusion space (unit variance per entry)."""
    return embeddings * math.sqrt(embeddings.shape[-1])


def from_prior_space(x: Tensor) -> Tensor:
    """A sampled x̂0 [B, D] -> a unit CLIP image embedding, what the decoder was trained on."""
    return F.normalize(x.float(), dim=-1)


class PriorTransformer(nn.Module):
    """(x_t [B, D], t [B], pooled text [B, D], tokens [B, L, W], mask [B, L]) -> x̂0 [B, D]."""

    def __init__(self, cfg: PriorModelConfig):
        super().__init__()
        if not (cfg.embed_dim and cfg.token_dim):
            raise ValueError("PriorModelConfig needs the CLIP's embed_dim and token_dim "
                             "resolved, not 0")
        self.cfg = cfg
        w = cfg.width
        self.tokens_in = nn.Linear(cfg.token_dim, w)
        self.text_in = nn.Linear(cfg.embed_dim, w)
        self.time = nn.Sequential(SinusoidalEmbedding(w), nn.Linear(w, w), nn.SiLU(),
                                  nn.Linear(w, w))
        self.x_in = nn.Linear(cfg.embed_dim, w)
        self.query = nn.Parameter(torch.randn(w) * 0.02)
        self.blocks = nn.ModuleList(TextBlock(w, cfg.heads) for _ in range(cfg.depth))
        self.ln = nn.LayerNorm(w)
        self.out = nn.Linear(w, cfg.embed_dim)

    def forward(self, x: Tensor, t: Tensor, vector: Tensor, tokens: Tensor, mask: Tensor,
                drop: Tensor | None = None) -> Tensor:
        if drop is not None and bool(drop.any()):
            # the prior has no learned null: the Denoiser writes the empty prompt into such rows
            raise ValueError("the prior got dropped rows: give its Denoiser null = the empty "
                             "prompt's encoding (TextConditioner.empty_prompt)")
        b = x.shape[0]
        # padding no prompt of the batch reaches is cut (masked keys add nothing anyway);
        # prompts are packed from position 0, so the real tokens are a prefix
        n = int(mask.sum(dim=1).max())
        tokens, mask = tokens[:, :n], mask[:, :n].bool()
        seq = torch.cat([self.tokens_in(tokens), self.text_in(vector)[:, None],
                         self.time(t)[:, None], self.x_in(x)[:, None],
                         self.query.expand(b, 1, -1)], dim=1)  # [B, n + 4, width]
        keys = torch.cat([mask, mask.new_ones(b, SLOTS)], dim=1)  # [B, n + 4]
        attn_mask = keys[:, None, None, :]  # every query sees every real key
        for block in self.blocks:
            seq = block(seq, attn_mask)
        return self.out(self.ln(seq[:, -1]))  # the query's output: x̂0 [B, D]
