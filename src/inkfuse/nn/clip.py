"""CLIP (Radford et al. 2021), small: an image tower and a text tower meeting in one space.

Both towers end in a linear projection to `embed_dim` and L2 normalisation, so the similarity of
an image and a caption is a cosine. Training pulls each image towards its own caption and away
from the others in the batch (`clip_loss`, a symmetric InfoNCE), with a learned temperature.

Image tower: a small CNN (conv stages with GroupNorm/SiLU, 2x average pooling between them) on the
image plus two coordinate channels (x, y in [-1, 1]), mean-pooled. Mean pooling alone would
forget where things are; the coordinate channels (CoordConv, Liu et al. 2018) let "top left" and
"bottom right" stay apart.

Text tower: token + learned position embeddings, pre-norm transformer blocks with causal
self-attention (as CLIP), pooled at the `<eot>` token, which has seen the whole prompt. Padding is
masked too, so the features of real tokens never depend on how much padding follows them; the
per-token features (`encode_text_tokens`) are what a text-conditioned U-Net cross-attends to.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from inkfuse.config import ClipModelConfig


class ImageEncoder(nn.Module):
    """[B, C, H, W] in [-1, 1] -> [B, channels[-1]] pooled features (before the projection)."""

    def __init__(self, cfg: ClipModelConfig):
        super().__init__()
        layers: list[nn.Module] = []
        c_in = cfg.in_channels + 2  # + x, y coordinates
        for i, c in enumerate(cfg.channels):
            if i > 0:
                layers.append(nn.AvgPool2d(2))
            for _ in range(2):
                layers += [nn.Conv2d(c_in, c, 3, padding=1),
                           nn.GroupNorm(math.gcd(cfg.groups, c), c), nn.SiLU()]
                c_in = c
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        b, _, h, w = x.shape
        ys = torch.linspace(-1, 1, h, device=x.device, dtype=x.dtype)
        xs = torch.linspace(-1, 1, w, device=x.device, dtype=x.dtype)
        coords = torch.stack(torch.meshgrid(xs, ys, indexing="xy")).expand(b, 2, h, w)
        return self.net(torch.cat([x, coords], dim=1)).mean(dim=(2, 3))


class TextBlock(nn.Module):
    """Pre-norm transformer block: x + attn(ln(x)), then x + mlp(ln(x))."""

    def __init__(self, width: int, heads: int):
        super().__init__()
        self.heads = heads
        self.ln1, self.ln2 = nn.LayerNorm(width), nn.LayerNorm(width)
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)
        self.mlp = nn.Sequential(nn.Linear(width, 4 * width), nn.GELU(),
                                 nn.Linear(4 * width, width))

    def forward(self, x: Tensor, attn_mask: Tensor) -> Tensor:
        q, k, v = rearrange(self.qkv(self.ln1(x)), "b l (three n d) -> three b n l d",
                            three=3, n=self.heads)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)
        x = x + self.proj(rearrange(out, "b n l d -> b l (n d)"))
        return x + self.mlp(self.ln2(x))


class TextEncoder(nn.Module):
    """(ids [B, L], mask [B, L]) -> per-token features [B, L, width] after a final LayerNorm.

    `causal` (CLIP) lets token i see tokens up to i; without it (a BERT/T5-style encoder) every
    token sees the whole prompt, so a colour's features can know which kind follows it."""

    def __init__(self, cfg: ClipModelConfig, causal: bool = True):
        super().__init__()
        self.context_length, self.causal = cfg.context_length, causal
        self.token = nn.Embedding(cfg.vocab_size, cfg.width)
        self.position = nn.Parameter(torch.randn(cfg.context_length, cfg.width) * 0.01)
        self.blocks = nn.ModuleList(TextBlock(cfg.width, cfg.heads) for _ in range(cfg.layers))
        self.ln = nn.LayerNorm(cfg.width)

    def forward(self, ids: Tensor, mask: Tensor) -> Tensor:
        L = ids.shape[1]
        if self.context_length < L:
            raise ValueError(f"{L} tokens, but the text encoder reads at most "
                             f"{self.context_length}")
        # query i sees key j if j is a real token (and j <= i when causal); <sot> is always
        # real, so no row is fully masked (which would give NaN)
        attn_mask = mask[:, None, :].bool()
        if self.causal:
            attn_mask = attn_mask & torch.ones(L, L, dtype=torch.bool, device=ids.device).tril()
        attn_mask = attn_mask[:, None]
        x = self.token(ids) + self.position[:L]
        for block in self.blocks:
            x = block(x, attn_mask)
        return self.ln(x)


class CLIP(nn.Module):
    def __init__(self, cfg: ClipModelConfig):
        super().__init__()
        self.cfg = cfg
        self.image = ImageEncoder(cfg)
        self.text = TextEncoder(cfg)
        self.image_proj = nn.Linear(cfg.channels[-1], cfg.embed_dim, bias=False)
        self.text_proj = nn.Linear(cfg.width, cfg.embed_dim, bias=False)
        # CLIP's initial temperature 0.07, learned in log space so it stays positive
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))

    def scale(self) -> Tensor:
        """exp(logit_scale), clamped at 100 as in CLIP so training cannot blow up the logits."""
        return self.logit_scale.clamp(max=math.log(100)).exp()

    def encode_image(self, images: Tensor) -> Tensor:
        """images [B, C, H, W] in [-1, 1] -> unit vectors [B, embed_dim]."""
        return F.normalize(self.image_proj(self.image(images)).float(), dim=-1)

    def encode_text_tokens(self, ids: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        """Per-token features [B, L, width] and the mask of real tokens [B, L]."""
        return self.text(ids, mask), mask

    def encode_text(self, ids: Tensor, mask: Tensor) -> Tensor:
        """ids, mask from `BPETokenizer.batch` -> unit vectors [B, embed_dim], taken at <eot>
        (the last real token)."""
        tokens, _ = self.encode_text_tokens(ids, mask)
        eot = mask.sum(dim=1) - 1
        pooled = tokens[torch.arange(ids.shape[0], device=ids.device), eot]
        return F.normalize(self.text_proj(pooled).float(), dim=-1)

    def forward(self, images: Tensor, ids: Tensor, mask: Tensor, neg_ids: Tensor | None = None,
                neg_mask: Tensor | None = None) -> Tensor:
        """The loss of one batch of matching (image, caption) pairs, with optional extra
        captions [N, L] that match no image (NegCLIP's hard negatives)."""
        negatives = None if neg_ids is None else self.encode_text(neg_ids, neg_mask)
        return clip_loss(self.encode_image(images), self.encode_text(ids, mask), self.scale(),
                         negatives)


def clip_loss(img: Tensor, txt: Tensor, logit_scale: Tensor | float,
              negatives: Tensor | None = None) -> Tensor:
    """Symmetric InfoNCE: row i of `img` matches row i of `txt`; every other row is a negative.

    img, txt: unit vectors [B, D]; logit_scale: the multiplier of the cosines (exp of the learned
    log temperature, e.g. `CLIP.scale()`). The mean of image->text and text->image cross-entropy.
    `negatives` [N, D]: captions of no image, extra columns of every image's image->text softmax
    (NegCLIP, Yuksekgonul et al. 2023, eq. 2); text->image has no image for them to pick.
    """
    logits = logit_scale * img @ txt.T  # [B images, B texts]
    target = torch.arange(img.shape[0], device=img.device)
    to_text = logits if negatives is None else torch.cat([logits, logit_scale * img @ negatives.T],
                                                          dim=1)
    return (F.cross_entropy(to_text, target) + F.cross_entropy(logits.T, target)) / 2
