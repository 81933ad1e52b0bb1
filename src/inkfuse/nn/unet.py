"""The U-Net: an encoder that halves the resolution level by level, a decoder that doubles it
back, and skip connections that hand every encoder feature map to the decoder at the same size.

Layout (Ronneberger 2015, with the diffusion-era changes of Ho 2020 / Dhariwal & Nichol 2021):

    conv_in ─ [ResBlock × n (+Attention)] ─ down ─ … ─ mid: Res, Attn, Res ─ … ─ up ─ conv_out
                 └──────────── skip (concat) ────────────────────────────┘

The step t and the condition enter as one embedding vector that scales and shifts the features of
every ResBlock. `kind = "plain-unet"` drops the time input: the course's first experiment, a
one-shot denoiser that cannot generate from pure noise.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from inkfuse.config import ModelConfig
from inkfuse.diffusion.conditioning import Condition
from inkfuse.nn.blocks import (
    Attention,
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

        self.time_embed = None
        if cfg.kind == "unet":
            features = (SinusoidalEmbedding(ch) if cfg.time_embedding == "sinusoidal"
                        else LinearEmbedding(ch, T))
            self.time_embed = nn.Sequential(features, nn.Linear(ch, emb_dim),
                                            make_act(cfg.activation), nn.Linear(emb_dim, emb_dim))
        self.cond_embed = nn.Linear(cfg.cond_dim, emb_dim) if cfg.cond_dim else None
        self.null_embed = nn.Parameter(torch.zeros(emb_dim)) if cfg.cond_dim else None
        if self.time_embed is None and self.cond_embed is None:
            emb_dim = 0

        def res(cin: int, cout: int) -> ResBlock:
            return ResBlock(cin, cout, emb_dim, dropout=cfg.dropout, residual=cfg.residual, **block)

        def attn(c: int) -> Attention:
            return Attention(c, cfg.head_dim, norm=cfg.norm, groups=cfg.groups)

        self.conv_in = nn.Conv2d(cfg.in_channels, ch, 3, padding=1)
        self.down, skips, size, c = nn.ModuleList(), [ch], image_size, ch
        for level, mult in enumerate(cfg.channel_mult):
            for _ in range(cfg.blocks_per_level):
                layers = [res(c, ch * mult)]
                c = ch * mult
                if size in cfg.attention_resolutions:
                    layers.append(attn(c))
                self.down.append(nn.ModuleList(layers))
                skips.append(c)
            if level < len(cfg.channel_mult) - 1:
                self.down.append(make_down(cfg.down, c))
                skips.append(c)
                size //= 2

        self.mid = nn.ModuleList([res(c, c), attn(c), res(c, c)] if cfg.attention_resolutions
                                 else [res(c, c)])

        self.up = nn.ModuleList()
        for level, mult in reversed(list(enumerate(cfg.channel_mult))):
            for _ in range(cfg.blocks_per_level + 1):
                layers = [res(c + skips.pop(), ch * mult)]
                c = ch * mult
                if size in cfg.attention_resolutions:
                    layers.append(attn(c))
                self.up.append(nn.ModuleList(layers))
            if level > 0:
                self.up.append(make_up(cfg.up, c))
                size *= 2

        self.out = nn.Sequential(make_norm(cfg.norm, c, cfg.groups), make_act(cfg.activation),
                                 nn.Conv2d(c, cfg.in_channels, 3, padding=1))

    def embed(self, t: Tensor | None, cond: Condition | None, batch: int) -> Tensor | None:
        """Sum of the time embedding and the condition (or learned null) embedding."""
        emb = None
        if self.time_embed is not None and t is not None:
            emb = self.time_embed(t)
        if self.cond_embed is not None:
            if cond is None:  # an unconditional call on a conditional model: all null
                c = self.null_embed.expand(batch, -1)
            else:
                c = torch.where(cond.drop[:, None], self.null_embed.to(cond.vector.dtype),
                                self.cond_embed(cond.vector))
            emb = c if emb is None else emb + c
        return emb

    def forward(self, x: Tensor, t: Tensor | None = None, cond: Condition | None = None) -> Tensor:
        emb = self.embed(t, cond, x.shape[0])
        h = self.conv_in(x)
        skips = [h]
        for layer in self.down:
            h = _run(layer, h, emb)
            skips.append(h)
        h = _run(self.mid, h, emb)
        for layer in self.up:
            if isinstance(layer, nn.ModuleList):
                h = torch.cat([h, skips.pop()], dim=1)
            h = _run(layer, h, emb)
        return self.out(h)


def _run(layer: nn.Module, h: Tensor, emb: Tensor | None) -> Tensor:
    """A ModuleList is a block sequence that sees the embedding; anything else is a resampler."""
    if isinstance(layer, nn.ModuleList):
        for block in layer:
            h = block(h, emb)
        return h
    return layer(h)


def build_model(cfg: ModelConfig, image_size: int, T: int) -> UNet:
    return UNet(cfg, image_size, T)
