"""The U-Net: an encoder that halves the resolution level by level, a decoder that doubles it
back, and skip connections that hand every encoder feature map to the decoder at the same size.

Layout (Ronneberger 2015, with the diffusion-era changes of Ho 2020 / Dhariwal & Nichol 2021):

    conv_in ─ [ResBlock × n (+Attention)] ─ down ─ … ─ mid: Res, Attn, Res ─ … ─ up ─ conv_out
                 └──────────── skip (concat) ────────────────────────────┘

Each up-sampler maps to the width of the level it enters, as Ronneberger's up-conv halves the
channels (ADM and diffusers keep the lower level's width there): the full-resolution levels then
convolve fewer channels, 8% fewer FLOPs, with the same Fashion-MNIST quality for the same
training time (benchmarks/README.md).

The step t and the condition enter as one embedding vector that scales and shifts the features of
every ResBlock. Text may also enter as token features that the attention levels cross-attend to
(`token_dim > 0`). The network sees only tensors, so that it stays below the diffusion code that
builds conditions. The null condition of classifier-free guidance is a learned embedding for
classes and context vectors, selected per row by `drop`; for text it is the encoding of the empty
prompt, which comes from the frozen text encoder rather than these weights, so the caller
(`diffusion.Denoiser`) writes it into the dropped rows and the network never tells them apart.

A super-resolution model (`low_res_channels > 0`, cascaded diffusion, Ho et al. 2021) reads the
enlarged low-res image as extra input channels and embeds its noise level like a second step.

`kind = "plain-unet"` drops the time input: the course's first experiment, a one-shot denoiser
that cannot generate from pure noise.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from inkfuse.config import ModelConfig
from inkfuse.nn.blocks import (
    Attention,
    CrossAttention,
    LinearEmbedding,
    ResBlock,
    SinusoidalEmbedding,
    make_act,
    make_down,
    make_norm,
    make_up,
)


class UNet(nn.Module):
    def __init__(self, cfg: ModelConfig, image_size: int, T: int):
        super().__init__()
        self.cfg = cfg
        ch = cfg.base_channels
        emb_dim = 4 * ch
        block = dict(norm=cfg.norm, groups=cfg.groups, act=cfg.activation)

        def step_embedding() -> nn.Module:
            features = (SinusoidalEmbedding(ch) if cfg.time_embedding == "sinusoidal"
                        else LinearEmbedding(ch, T))
            return nn.Sequential(features, nn.Linear(ch, emb_dim), make_act(cfg.activation),
                                 nn.Linear(emb_dim, emb_dim))

        self.time_embed = step_embedding() if cfg.kind == "unet" else None
        # super-resolution: the noise level of the low-res input is a second step to embed
        self.low_res_embed = step_embedding() if cfg.low_res_channels else None
        self.cond_embed = nn.Linear(cfg.cond_dim, emb_dim) if cfg.cond_dim else None
        self.null_embed = (nn.Parameter(torch.zeros(emb_dim))
                           if cfg.cond_dim and cfg.null_condition == "learned" else None)
        if self.time_embed is None and self.cond_embed is None and self.low_res_embed is None:
            emb_dim = 0

        def res(cin: int, cout: int) -> ResBlock:
            return ResBlock(cin, cout, emb_dim, dropout=cfg.dropout, residual=cfg.residual, **block)

        def attn(c: int) -> list[nn.Module]:
            layers: list[nn.Module] = [Attention(c, cfg.head_dim, norm=cfg.norm, groups=cfg.groups)]
            if cfg.token_dim:
                layers.append(CrossAttention(c, cfg.token_dim, cfg.head_dim, norm=cfg.norm,
                                             groups=cfg.groups))
            return layers

        self.conv_in = nn.Conv2d(cfg.in_channels + cfg.low_res_channels, ch, 3, padding=1)
        self.down, skips, size, c = nn.ModuleList(), [ch], image_size, ch
        for level, mult in enumerate(cfg.channel_mult):
            for _ in range(cfg.blocks_per_level):
                layers = [res(c, ch * mult)]
                c = ch * mult
                if size in cfg.attention_resolutions:
                    layers += attn(c)
                self.down.append(nn.ModuleList(layers))
                skips.append(c)
            if level < len(cfg.channel_mult) - 1:
                self.down.append(make_down(cfg.down, c))
                skips.append(c)
                size //= 2

        self.mid = nn.ModuleList([res(c, c), *attn(c), res(c, c)] if cfg.attention_resolutions
                                 else [res(c, c)])

        self.up = nn.ModuleList()
        for level, mult in reversed(list(enumerate(cfg.channel_mult))):
            for _ in range(cfg.blocks_per_level + 1):
                layers = [res(c + skips.pop(), ch * mult)]
                c = ch * mult
                if size in cfg.attention_resolutions:
                    layers += attn(c)
                self.up.append(nn.ModuleList(layers))
            if level > 0:  # to the width of the level it enters
                self.up.append(make_up(cfg.up, c, ch * cfg.channel_mult[level - 1]))
                c = ch * cfg.channel_mult[level - 1]
                size *= 2

        self.out = nn.Sequential(make_norm(cfg.norm, c, cfg.groups), make_act(cfg.activation),
                                 nn.Conv2d(c, cfg.out_channels or cfg.in_channels, 3, padding=1))

    def embed(self, t: Tensor | None, vector: Tensor | None, drop: Tensor | None,
              low_res_t: Tensor | None, batch: int) -> Tensor | None:
        """Sum of the time embedding, the condition (or learned null) embedding and the low-res
        noise level's embedding: [B, 4 · base_channels], or None for a network with none."""
        emb = None
        if self.time_embed is not None and t is not None:
            emb = self.time_embed(t)
        if self.cond_embed is not None:
            if vector is None:  # an unconditional call on a class-conditional model: all null
                if self.null_embed is None:
                    raise ValueError("this U-Net's null condition is the empty prompt, not a "
                                     "learned embedding: give its encoding as `vector` "
                                     "(Denoiser(..., null=...) does)")
                c = self.null_embed.expand(batch, -1)
            else:
                c = self.cond_embed(vector)
                if self.null_embed is not None and drop is not None:
                    c = torch.where(drop[:, None], self.null_embed.to(vector.dtype), c)
            emb = c if emb is None else emb + c
        if self.low_res_embed is not None:
            e = self.low_res_embed(low_res_t)
            emb = e if emb is None else emb + e
        return emb

    def forward(self, x: Tensor, t: Tensor | None = None, *, vector: Tensor | None = None,
                drop: Tensor | None = None, tokens: Tensor | None = None,
                mask: Tensor | None = None, low_res: Tensor | None = None,
                low_res_t: Tensor | None = None) -> Tensor:
        """The trained target (ε, x_0 or v) for x [B, C, H, W] at steps t [B].

        vector [B, K]: one-hot class, context or pooled text embedding; left out, a class or
        context model reads its learned null for every row. drop [B] bool: the rows that read
        the learned null instead of their vector (None: none). A text model has no learned null
        and refuses `drop`, so that a forgotten null cannot pass silently: its dropped rows
        must already hold the empty prompt. tokens [B, L, W] and mask [B, L] (True = a real
        token): the text that cross-attention reads.
        low_res [B, C, H, W] and low_res_t [B]: a super-resolution model's enlarged, noised
        low-res image and the step of its noise. Keyword names match `Condition`'s fields.
        """
        reads_condition = self.cond_embed is not None or self.cfg.token_dim > 0
        if drop is not None and reads_condition and self.null_embed is None:
            raise ValueError("this U-Net has no learned null condition: give the empty prompt's "
                             "encoding in the dropped rows, and no `drop` (Denoiser(..., "
                             "null=...) does)")
        if self.cfg.low_res_channels:  # super-resolution: the enlarged low-res image beside x
            if low_res is None or low_res_t is None:
                raise ValueError("a super-resolution U-Net needs the low-res image and its noise "
                                 "step (Condition.low_res, low_res_t)")
            x = torch.cat([x, low_res.to(x.dtype)], dim=1)
        text = None
        if self.cfg.token_dim:
            if tokens is None or mask is None:
                raise ValueError("this U-Net cross-attends to text: give tokens and mask (the "
                                 "empty prompt's for no text: Denoiser(..., null=...) does)")
            text = (tokens, mask)
        emb = self.embed(t, vector, drop, low_res_t, x.shape[0])
        h = self.conv_in(x)
        skips = [h]
        for layer in self.down:
            h = _run(layer, h, emb, text)
            skips.append(h)
        h = _run(self.mid, h, emb, text)
        for layer in self.up:
            if isinstance(layer, nn.ModuleList):
                h = torch.cat([h, skips.pop()], dim=1)
            h = _run(layer, h, emb, text)
        return self.out(h)


def _run(layer: nn.Module, h: Tensor, emb: Tensor | None,
         text: tuple[Tensor, Tensor] | None) -> Tensor:
    """A ModuleList is a block sequence that sees the embedding (and cross-attention blocks the
    text tokens); anything else is a resampler."""
    if isinstance(layer, nn.ModuleList):
        for block in layer:
            h = block(h, *text) if isinstance(block, CrossAttention) else block(h, emb)
        return h
    return layer(h)


def build_model(cfg: ModelConfig, image_size: int, T: int) -> UNet:
    """The U-Net for images of `image_size`, or for latents of `cfg.size` when that is set."""
    return UNet(cfg, cfg.size or image_size, T)
