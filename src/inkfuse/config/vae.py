"""The VAE recipe: `[data]` (the shared DataConfig; labels are ignored), `[vae]` (the
architecture, `VAEModelConfig`, which `vae.json` stores resolved, plus the loss settings and the
evaluation size: `VAESettings`) and `[train]` (the shared TrainConfig, with the VAE's own
defaults). See `inkfuse.train.vae` for the loss these settings weigh.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from inkfuse.config.core import Recipe, bounded, choice, listed
from inkfuse.config.sections import DataConfig, TrainConfig, check_data, check_train
from inkfuse.errors import ConfigError

# Stable Diffusion's widths for a factor of 8; one level fewer for 4
DEFAULT_CHANNEL_MULT = {4: [1, 2, 2], 8: [1, 2, 4, 4]}


@dataclass
class VAEModelConfig:
    """The architecture: the `model` section of `vae.json`, and the first keys of `[vae]`."""

    in_channels: int = bounded(0, 0, 64, doc="0 = from the data")
    down_factor: int = choice(4, 4, 8, doc="image side / latent side")
    latent_channels: int = bounded(4, 1, 256)
    base_channels: int = bounded(64, 4, 4096)
    channel_mult: list[int] = listed(
        [], doc="width multipliers, one per level: 3 for down_factor 4, 4 for 8 "
                "(empty = [1, 2, 2] or [1, 2, 4, 4]; each at least 1)", lo=1)
    blocks_per_level: int = bounded(1, 1, 8)
    attention: bool = False
    head_dim: int = bounded(32, 4, 1024, doc="attention head width (with attention = true)")
    groups: int = bounded(8, 1, 256, doc="GroupNorm groups")
    pad: int = bounded(0, 0, 64, doc="black border added before encoding, cropped after decoding")

    def widths(self) -> list[int]:
        """Channels per level, checked against the down factor."""
        mult = self.channel_mult or DEFAULT_CHANNEL_MULT[self.down_factor]
        levels = DEFAULT_CHANNEL_MULT[self.down_factor]
        if len(mult) != len(levels):
            raise ValueError(f"down_factor {self.down_factor} needs channel_mult with "
                             f"{len(levels)} entries, one per level (e.g. {levels}), not {mult}")
        return [self.base_channels * m for m in mult]


@dataclass
class VAESettings(VAEModelConfig):
    """The `[vae]` table: the architecture, and how the autoencoder is scored and trained."""

    kl_weight: float = bounded(1e-6, 0.0, 1.0, doc="Stable Diffusion's 1e-6 (inkfuse.train.vae)")
    recon_loss: str = choice("l1", "l1", "l2")
    perceptual_weight: float = bounded(
        0.0, 0.0, 100.0, doc="classifier-feature distance, 1-channel data only (train.vae)")
    eval_count: int = bounded(
        512, 1, 100_000, doc="held-out images scored; as many training images set the scale")


@dataclass
class VAEConfig(Recipe):
    """A VAE recipe; `inkfuse.train.train` trains it into a run dir with vae.json."""

    data: DataConfig = field(default_factory=DataConfig)
    vae: VAESettings = field(default_factory=VAESettings)
    train: TrainConfig = field(default_factory=lambda: TrainConfig(
        steps=3000, batch_size=32, ema_decay=0.0))  # latent diffusion trains its VAE without EMA

    def check(self) -> None:
        d, v = self.data, self.vae
        check_data(d)
        check_train(self.train)
        try:
            widths = v.widths()
        except ValueError as e:
            raise ConfigError(f"vae.{e}") from None
        side = d.size + 2 * v.pad
        if side % v.down_factor:
            raise ConfigError(f"data.size + 2 * vae.pad = {side} must be divisible by "
                              f"vae.down_factor = {v.down_factor}; change the size or set vae.pad")
        if d.size < 11:
            raise ConfigError(f"data.size = {d.size} is below 11, the window of the SSIM score")
        if any(w % v.groups for w in widths):
            raise ConfigError(f"vae.base_channels * channel_mult = {widths} must all be divisible "
                              f"by vae.groups = {v.groups}")
        # the encoder's and the decoder's mid blocks attend at the deepest width
        if v.attention and widths[-1] % v.head_dim:
            raise ConfigError(f"vae.head_dim = {v.head_dim} does not divide the deepest width "
                              f"{widths[-1]} (base_channels * channel_mult[-1]) where the mid "
                              "blocks attend; pick a head_dim that divides it")
