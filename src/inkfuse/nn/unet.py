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
(`token_dim > 0`). The null condition of classifier-free guidance is a learned embedding for
classes and context vectors, and for text the encoding of the empty prompt (`set_null_text`).

A super-resolution model (`low_res_channels > 0`, cascaded diffusion, Ho et al. 2021) reads the
enlarged low-res image as extra input channels and embeds its noise level like a second step.

`kind = "plain-unet"` drops the time input: the course's first experiment, a one-shot denoiser
that cannot generate from pure noise.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from inkfuse.config import ModelConfig
from inkfuse.diffusion.conditioning import Condition
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
        for name in ("null_vector", "null_tokens", "null_mask"):  # filled by set_null_text
            self.register_buffer(name, None, persistent=False)
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
                                 nn.Conv2d(c, cfg.in_channels, 3, padding=1))

    def set_null_text(self, vector: Tensor | None, tokens: Tensor | None,
                      mask: Tensor | None) -> None:
        """The empty prompt's encoding ([K], [L, W], [L]): what a dropped text condition becomes.

        It comes from the frozen text encoder, so it is not saved with the weights; buffers so
        that it moves with the model to its device."""
        for name, value in (("null_vector", vector), ("null_tokens", tokens), ("null_mask", mask)):
            self.register_buffer(name, value, persistent=False)

    def condition(self, cond: Condition | None, batch: int) -> Condition | None:
        """Dropped rows replaced by the empty prompt's encoding (text models only)."""
        if self.cfg.null_condition == "learned":
            return cond
        if self.null_mask is None and self.null_vector is None:
            raise RuntimeError("a text-conditioned U-Net needs set_null_text(...) before use")
        if cond is None:  # an unconditional call: the empty prompt for every sample
            null = lambda t: None if t is None else t.expand(batch, *t.shape)  # noqa: E731
            return Condition(null(self.null_vector), torch.zeros(batch, dtype=torch.bool,
                             device=self.conv_in.weight.device),
                             null(self.null_tokens), null(self.null_mask))

        def pick(value: Tensor | None, null: Tensor | None, seq: bool = False) -> Tensor | None:
            if value is None:
                return None
            if seq:  # tokens and mask: zero-pad (or cut padding) to the batch's length
                fitted = null.new_zeros((value.shape[1], *null.shape[1:]))
                n = min(len(null), value.shape[1])
                fitted[:n] = null[:n]
                null = fitted
            d = cond.drop.reshape(-1, *[1] * (value.ndim - 1))
            return torch.where(d, null.to(value.dtype), value)

        return Condition(pick(cond.vector, self.null_vector), torch.zeros_like(cond.drop),
                         pick(cond.tokens, self.null_tokens, True),
                         pick(cond.mask, self.null_mask, True))

    def embed(self, t: Tensor | None, cond: Condition | None, batch: int) -> Tensor | None:
        """Sum of the time embedding and the condition (or learned null) embedding."""
        emb = None
        if self.time_embed is not None and t is not None:
            emb = self.time_embed(t)
        if self.cond_embed is not None:
            if cond is None:  # an unconditional call on a class-conditional model: all null
                c = self.null_embed.expand(batch, -1)
            elif self.null_embed is None:
                c = self.cond_embed(cond.vector)
            else:
                c = torch.where(cond.drop[:, None], self.null_embed.to(cond.vector.dtype),
                                self.cond_embed(cond.vector))
            emb = c if emb is None else emb + c
        if self.low_res_embed is not None:
            e = self.low_res_embed(cond.low_res_t)
            emb = e if emb is None else emb + e
        return emb

    def forward(self, x: Tensor, t: Tensor | None = None, cond: Condition | None = None) -> Tensor:
        cond = self.condition(cond, x.shape[0])
        if self.cfg.low_res_channels:  # super-resolution: the enlarged low-res image beside x
            if cond is None or cond.low_res is None:
                raise ValueError("a super-resolution U-Net needs the low-res image "
                                 "(Condition.low_res)")
            x = torch.cat([x, cond.low_res.to(x.dtype)], dim=1)
        emb = self.embed(t, cond, x.shape[0])
        text = (cond.tokens, cond.mask) if self.cfg.token_dim else None
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
