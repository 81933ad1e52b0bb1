"""U-Net building blocks, named after what the courses call them.

Each switch of the model config picks one of these: GroupNorm or BatchNorm, GELU/ReLU/SiLU,
space-to-depth ("rearrange") pooling or max-pool or a strided conv, nearest-neighbour + conv
upsampling (free of the checkerboard artefacts of overlapping transposed convolutions, Odena et
al. 2016) or the transposed convolution itself, sinusoidal or linear time embeddings.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn


def make_norm(kind: str, channels: int, groups: int) -> nn.Module:
    if kind == "group":
        return nn.GroupNorm(math.gcd(groups, channels), channels)
    return nn.BatchNorm2d(channels)


def make_act(kind: str) -> nn.Module:
    return {"silu": nn.SiLU, "gelu": nn.GELU, "relu": nn.ReLU}[kind]()


class SinusoidalEmbedding(nn.Module):
    """Transformer-style features of the step: sin/cos at geometric frequencies (Vaswani 2017)."""

    def __init__(self, dim: int, max_period: float = 10_000.0):
        super().__init__()
        half = dim // 2
        self.register_buffer("freqs", torch.exp(-math.log(max_period) * torch.arange(half) / half),
                             persistent=False)

    def forward(self, t: Tensor) -> Tensor:
        angles = t.float()[:, None] * self.freqs[None]
        return torch.cat([angles.sin(), angles.cos()], dim=1)


class LinearEmbedding(nn.Module):
    """The course's first time embedding: the step scaled to [0, 1] through a linear layer."""

    def __init__(self, dim: int, T: int):
        super().__init__()
        self.T = T
        self.proj = nn.Linear(1, dim)

    def forward(self, t: Tensor) -> Tensor:
        return self.proj(t.float()[:, None] / self.T)


class ResBlock(nn.Module):
    """norm → act → conv, scale-and-shift by the embedding, norm → act → dropout → conv, + skip.

    With `residual=False` it is the plain double-conv block of the course's first U-Net.
    """

    def __init__(self, cin: int, cout: int, emb_dim: int, *, norm: str, groups: int, act: str,
                 dropout: float = 0.0, residual: bool = True):
        super().__init__()
        self.norm1, self.act1 = make_norm(norm, cin, groups), make_act(act)
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.film = nn.Linear(emb_dim, 2 * cout) if emb_dim else None
        self.norm2, self.act2 = make_norm(norm, cout, groups), make_act(act)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        self.skip = None
        if residual:
            self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()
            nn.init.zeros_(self.conv2.weight)  # each residual block starts as the identity
            nn.init.zeros_(self.conv2.bias)

    def forward(self, x: Tensor, emb: Tensor | None) -> Tensor:
        h = self.conv1(self.act1(self.norm1(x)))
        if self.film is not None and emb is not None:
            h = modulated_norm(self.norm2, h, *self.film(emb).chunk(2, dim=1))
        else:
            h = self.norm2(h)
        h = self.dropout(self.act2(h))
        if isinstance(self.skip, nn.Conv2d):
            return conv_plus_pointwise(self.conv2, h, self.skip, x)
        h = self.conv2(h)
        return h if self.skip is None else h + self.skip(x)


def conv_plus_pointwise(conv: nn.Conv2d, h: Tensor, pointwise: nn.Conv2d, x: Tensor) -> Tensor:
    """conv(h) + pointwise(x): a residual sum whose skip path is a 1×1 conv.

    oneDNN runs the backward pass of a 1×1 conv on contiguous (NCHW) maps at a small fraction of
    the FLOP rate of a 3×3 one. So here the 1×1 conv is what it is, one matrix product over each
    sample's pixels, fused with the sum (`baddbmm`), and its bias is folded into the other conv's
    (speed-ups in benchmarks/results/layers.md). Channels-last maps, where oneDNN does well, keep
    the plain form.
    """
    out = F.conv2d(h, conv.weight, conv.bias + pointwise.bias, conv.stride, conv.padding)
    if not (out.is_contiguous() and x.is_contiguous()):
        return out + F.conv2d(x, pointwise.weight)
    b, c = x.shape[:2]
    weight = pointwise.weight.view(-1, c).to(out.dtype).expand(b, -1, -1)
    return torch.baddbmm(out.flatten(2), weight, x.flatten(2)).view_as(out)


def modulated_norm(norm: nn.Module, h: Tensor, scale: Tensor, shift: Tensor) -> Tensor:
    """norm(h) * (1 + scale) + shift, with per-sample scale and shift of shape [B, C].

    For GroupNorm this is one pass instead of three: the scale and shift fold into the norm's
    affine parameters, and a batch of B samples is normalised as one sample of B·C channels in
    B·G groups (no group straddles two samples, so the statistics are the same); measured in
    benchmarks/results/layers.md.
    """
    if isinstance(norm, nn.GroupNorm):
        b, c = h.shape[:2]
        weight = (norm.weight * (1 + scale)).flatten()
        bias = (norm.bias * (1 + scale) + shift).flatten()
        out = F.group_norm(h.reshape(1, b * c, *h.shape[2:]), b * norm.num_groups, weight, bias,
                           norm.eps)
        return out.view_as(h)
    return norm(h) * (1 + scale[:, :, None, None]) + shift[:, :, None, None]


class Attention(nn.Module):
    """Multi-head self-attention over the pixels of a feature map, via fused SDPA."""

    def __init__(self, channels: int, head_dim: int, *, norm: str, groups: int):
        super().__init__()
        self.heads = max(1, channels // head_dim)
        self.norm = make_norm(norm, channels, groups)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.proj = nn.Conv2d(channels, channels, 1)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def forward(self, x: Tensor, emb: Tensor | None = None) -> Tensor:
        h, w = x.shape[-2:]
        q, k, v = rearrange(self.qkv(self.norm(x)), "b (three n d) h w -> three b n (h w) d",
                            three=3, n=self.heads)
        out = F.scaled_dot_product_attention(q, k, v)
        return x + self.proj(rearrange(out, "b n (h w) d -> b (n d) h w", h=h, w=w))


class CrossAttention(nn.Module):
    """Pixels attend to text tokens (Rombach et al. 2022): queries from the feature map, keys and
    values from the per-token text features. Padding tokens are masked out, so a prompt means
    the same whatever the padded length of its batch."""

    def __init__(self, channels: int, token_dim: int, head_dim: int, *, norm: str, groups: int):
        super().__init__()
        self.heads = max(1, channels // head_dim)
        self.norm = make_norm(norm, channels, groups)
        self.q = nn.Conv2d(channels, channels, 1)
        self.kv = nn.Linear(token_dim, 2 * channels)
        self.proj = nn.Conv2d(channels, channels, 1)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def _qkv(self, x: Tensor, tokens: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        q = rearrange(self.q(self.norm(x)), "b (n d) h w -> b n (h w) d", n=self.heads)
        k, v = rearrange(self.kv(tokens), "b l (two n d) -> two b n l d", two=2,
                         n=self.heads)
        return q, k, v  # [B, heads, HW, d], [B, heads, L, d] twice

    def forward(self, x: Tensor, tokens: Tensor, mask: Tensor) -> Tensor:
        h, w = x.shape[-2:]
        q, k, v = self._qkv(x, tokens)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask[:, None, None, :])
        return x + self.proj(rearrange(out, "b n (h w) d -> b (n d) h w", h=h, w=w))

    def attention_weights(self, x: Tensor, tokens: Tensor, mask: Tensor) -> Tensor:
        """What `forward` attends with, spelled out: softmax(q kᵀ / sqrt(d)) over the real
        tokens, [B, heads, H·W, L] (each pixel's row sums to 1; padding gets 0). For pictures
        of where the words go; `forward` never forms this matrix."""
        q, k, _ = self._qkv(x, tokens)
        logits = q @ k.transpose(-1, -2) / q.shape[-1] ** 0.5
        return logits.masked_fill(~mask[:, None, None, :], float("-inf")).softmax(-1)


class RearrangePool(nn.Module):
    """Space-to-depth: each 2×2 patch becomes 4 channels, then a 3×3 conv mixes them.

    Unlike max-pooling it keeps all the information, which the course shows sharpens results.
    """

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(4 * channels, channels, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(rearrange(x, "b c (h p) (w q) -> b (c p q) h w", p=2, q=2))


def make_down(kind: str, channels: int) -> nn.Module:
    if kind == "rearrange":
        return RearrangePool(channels)
    if kind == "maxpool":
        return nn.MaxPool2d(2)
    return nn.Conv2d(channels, channels, 3, stride=2, padding=1)


class NearestUpConv(nn.Module):
    """Nearest-neighbour ×2 upsampling, then a 3×3 conv: computed as one stride-2 transposed conv.

    Nearest upsampling is itself a stride-2 transposed conv with a 2×2 box kernel, and two
    (transposed) convolutions compose into one whose kernel is their convolution. Along each axis
    the 3×3 taps (w0, w1, w2) become the 4×4 taps (w2, w1+w2, w0+w1, w0). Same function, same
    parameters and same freedom from checkerboard artefacts as upsample-then-conv, at 16/36 of
    that conv's FLOPs and without building the upsampled map (measured in
    benchmarks/results/layers.md).
    """

    # row k: which taps of the 3×3 kernel sum into tap k of the 4×4 transposed-conv kernel
    TAPS = ((0.0, 0.0, 1.0), (0.0, 1.0, 1.0), (1.0, 1.0, 0.0), (1.0, 0.0, 0.0))

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 3, padding=1)
        taps = torch.tensor(self.TAPS)
        # both axes at once, [9, 16]: kernel[k, l] = Σ_ab taps[k, a] · w[a, b] · taps[l, b]
        self.register_buffer("taps", torch.kron(taps, taps).T.contiguous(), persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        w = self.conv.weight
        kernel = (w.flatten(2) @ self.taps.to(w.dtype)).view(*w.shape[:2], 4, 4)
        return F.conv_transpose2d(x, kernel.transpose(0, 1), self.conv.bias, stride=2, padding=1)


def make_up(kind: str, cin: int, cout: int) -> nn.Module:
    if kind == "transposed":
        return nn.ConvTranspose2d(cin, cout, 4, stride=2, padding=1)
    return NearestUpConv(cin, cout)
