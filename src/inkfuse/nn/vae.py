"""The autoencoder of latent diffusion (Rombach et al. 2022): images <-> a small latent grid.

    conv_in ─ [ResBlock × n ─ down] × levels ─ mid: Res (+Attn) ─ norm, act ─ conv → mean, logvar
    conv_in ─ mid: Res (+Attn) ─ [ResBlock × n ─ up] × levels ─ norm, act ─ conv → image

The encoder gives a diagonal Gaussian per latent pixel rather than one point. With the tiny KL
weight of latent diffusion (1e-6) it is nearly deterministic, but the KL term still stops the
latents from drifting to arbitrary scales, and sampling z during training makes the decoder
robust to the small errors a diffusion model will make in latent space.

A factor of 4 needs 3 levels (two halvings), 8 needs 4. Downsampling is a stride-2 conv and
upsampling nearest + conv (`nn.blocks.make_down` / `make_up`); the ResBlocks are the U-Net's,
without a time embedding.

`scale_factor` is 1 / std of the latents of training images, measured after training (Stable
Diffusion's 0.18215 is this number for its VAE): a diffusion model trains on
`z * scale_factor`, whose variance is then about 1, as its noise schedule assumes. It is a
buffer, so it travels in the weights file.

`pad` lets an awkward size reach a latent grid that a U-Net can halve: 28 px Fashion-MNIST padded
with black by 2 px is 32 px, giving 8 x 8 latents (7 x 7 could not be halved at all).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from inkfuse.config import VAEModelConfig
from inkfuse.nn.blocks import Attention, ResBlock, make_act, make_down, make_norm, make_up


@dataclass
class DiagonalGaussian:
    """q(z | x) = N(mean, exp(logvar)) per latent element; tensors [B, C, h, w]."""

    mean: Tensor
    logvar: Tensor

    @property
    def std(self) -> Tensor:
        return torch.exp(0.5 * self.logvar)

    def sample(self, generator: torch.Generator | None = None) -> Tensor:
        noise = torch.randn(self.mean.shape, generator=generator, device=self.mean.device,
                            dtype=self.mean.dtype)
        return self.mean + self.std * noise

    def kl(self) -> Tensor:
        """KL(q || N(0, I)) per image [B], summed over the latent elements."""
        return 0.5 * (self.mean**2 + self.logvar.exp() - 1 - self.logvar).sum(dim=(1, 2, 3))


def _res(cin: int, cout: int, cfg: VAEModelConfig) -> ResBlock:
    return ResBlock(cin, cout, 0, norm="group", groups=cfg.groups, act="silu")


def _mid(channels: int, cfg: VAEModelConfig) -> nn.ModuleList:
    blocks: list[nn.Module] = [_res(channels, channels, cfg)]
    if cfg.attention:
        blocks.append(Attention(channels, cfg.head_dim, norm="group", groups=cfg.groups))
    return nn.ModuleList(blocks)


def _head(cin: int, cout: int, cfg: VAEModelConfig) -> nn.Sequential:
    return nn.Sequential(make_norm("group", cin, cfg.groups), make_act("silu"),
                         nn.Conv2d(cin, cout, 3, padding=1))


class Encoder(nn.Module):
    """Image [B, C, H, W] -> mean and logvar features [B, 2 * latent, H / f, W / f]."""

    def __init__(self, cfg: VAEModelConfig):
        super().__init__()
        widths = cfg.widths()
        self.conv_in = nn.Conv2d(cfg.in_channels, widths[0], 3, padding=1)
        self.levels = nn.ModuleList()
        cin = widths[0]
        for i, width in enumerate(widths):
            level: list[nn.Module] = []
            for _ in range(cfg.blocks_per_level):
                level.append(_res(cin, width, cfg))
                cin = width
            if i < len(widths) - 1:
                level.append(make_down("stride", width))
            self.levels.append(nn.ModuleList(level))
        self.mid = _mid(cin, cfg)
        self.out = _head(cin, 2 * cfg.latent_channels, cfg)

    def forward(self, x: Tensor) -> Tensor:
        h = self.conv_in(x)
        for level in self.levels:
            h = _run(level, h)
        return self.out(_run(self.mid, h))


class Decoder(nn.Module):
    """Latents [B, latent, h, w] -> image [B, C, h * f, w * f], the encoder's mirror."""

    def __init__(self, cfg: VAEModelConfig):
        super().__init__()
        widths = cfg.widths()[::-1]
        self.conv_in = nn.Conv2d(cfg.latent_channels, widths[0], 3, padding=1)
        self.mid = _mid(widths[0], cfg)
        self.levels = nn.ModuleList()
        cin = widths[0]
        for i, width in enumerate(widths):
            level: list[nn.Module] = []
            for _ in range(cfg.blocks_per_level):
                level.append(_res(cin, width, cfg))
                cin = width
            if i < len(widths) - 1:
                level.append(make_up("nearest-conv", width, width))
            self.levels.append(nn.ModuleList(level))
        self.out = _head(cin, cfg.in_channels, cfg)

    def forward(self, z: Tensor) -> Tensor:
        h = _run(self.mid, self.conv_in(z))
        for level in self.levels:
            h = _run(level, h)
        return self.out(h)


def _run(blocks: nn.ModuleList, h: Tensor) -> Tensor:
    for block in blocks:
        h = block(h, None) if isinstance(block, ResBlock) else block(h)
    return h


class AutoencoderKL(nn.Module):
    """encode(x in [-1, 1]) -> DiagonalGaussian over latents; decode(z) -> image.

    `image_size` records the resolution it was trained at (0 = unknown): the network is fully
    convolutional, but inputs of that size are what it knows, so the CLI resizes to it.
    """

    def __init__(self, cfg: VAEModelConfig, image_size: int = 0):
        super().__init__()
        self.cfg, self.image_size = cfg, image_size
        self.encoder, self.decoder = Encoder(cfg), Decoder(cfg)
        self.register_buffer("scale_factor", torch.tensor(1.0))

    def latent_shape(self, size: int) -> tuple[int, int, int]:
        """[C, h, w] of the latents of a size x size image."""
        side = (size + 2 * self.cfg.pad) // self.cfg.down_factor
        return self.cfg.latent_channels, side, side

    def encode(self, x: Tensor) -> DiagonalGaussian:
        h, w = (s + 2 * self.cfg.pad for s in x.shape[-2:])
        if h % self.cfg.down_factor or w % self.cfg.down_factor:
            raise ValueError(f"an image of {tuple(x.shape[-2:])} px + {self.cfg.pad} px padding "
                             f"is not divisible by the down factor {self.cfg.down_factor}")
        if self.cfg.pad:
            x = F.pad(x, (self.cfg.pad,) * 4, value=-1.0)
        # the distribution in fp32 even under bf16 autocast: exp(logvar) loses too much in bf16
        mean, logvar = self.encoder(x).float().chunk(2, dim=1)
        return DiagonalGaussian(mean, logvar.clamp(-30.0, 20.0))

    def decode(self, z: Tensor) -> Tensor:
        x = self.decoder(z)
        p = self.cfg.pad
        return x[..., p:x.shape[-2] - p, p:x.shape[-1] - p] if p else x

    def sample_prior(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """n images [n, C, S, S] decoded from z ~ N(0, I), the prior the KL term pulls q(z|x)
        towards: the VAE as a generative model of its own (Kingma & Welling 2014). Only as good
        as the KL weight makes it: at latent diffusion's 1e-6 the posteriors sit far from the
        prior and its samples are noise; the latents a diffusion model learns are another
        matter. `generator` lives on the model's device."""
        if not self.image_size:
            raise ValueError("this VAE does not record its image size, so its latent shape is "
                             "unknown; sample a VAE trained by inkfuse")
        device = self.scale_factor.device
        z = torch.randn((n, *self.latent_shape(self.image_size)), generator=generator,
                        device=device)
        return self.decode(z)

    def forward(self, x: Tensor, generator: torch.Generator | None = None
                ) -> tuple[Tensor, DiagonalGaussian]:
        """Reconstruction from a sampled z (training), and the posterior for the KL term."""
        posterior = self.encode(x)
        return self.decode(posterior.sample(generator)), posterior
