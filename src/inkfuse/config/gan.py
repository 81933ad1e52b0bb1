"""The GAN recipe: `[data]` (the shared DataConfig; labels "class" for a class-conditional GAN,
"none" for an unconditional one), `[gan]` (`GANSettings`: the architecture, `GANModelConfig`,
which `gan.json` stores resolved, plus the two-time-scale learning rates, Adam's betas and the
evaluation size) and `[train]` (the shared TrainConfig, with a GAN's own defaults). See
`inkfuse.train.gan` for the step these settings drive.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from inkfuse.config.core import Recipe, bounded
from inkfuse.config.sections import DataConfig, TrainConfig, check_data, check_train
from inkfuse.errors import ConfigError


@dataclass
class GANModelConfig:
    """The architecture: the `model` section of `gan.json`, and the first keys of `[gan]`."""

    z_dim: int = bounded(64, 1, 4096, doc="width of the generator's Gaussian input z")
    g_channels: int = bounded(16, 4, 1024, doc="generator width at full resolution (x2, x4 "
                                               "at 1/2 and 1/4 of it)")
    d_channels: int = bounded(32, 4, 1024, doc="discriminator width of its first conv (x2 "
                                               "deeper)")
    groups: int = bounded(8, 1, 256, doc="GroupNorm groups of the generator")
    num_classes: int = bounded(0, 0, 100_000, doc="0 = from the data (none with labels 'none')")
    in_channels: int = bounded(0, 0, 64, doc="0 = from the data")
    image_size: int = bounded(0, 0, 512, doc="0 = data.size")


@dataclass
class GANSettings(GANModelConfig):
    """The `[gan]` table: the architecture, and how the two networks are trained and scored."""

    d_lr_scale: float = bounded(
        2.0, 0.01, 100.0, doc="the discriminator's learning rate / train.lr (the generator's): "
                              "the two time-scale update rule (Heusel et al. 2017)")
    beta1: float = bounded(0.5, 0.0, 0.999, doc="Adam's β1 of both networks (SNGAN: 0.5 or 0)")
    beta2: float = bounded(0.999, 0.0, 0.99999, doc="Adam's β2 (SNGAN: 0.999, SAGAN: 0.9)")
    eval_count: int = bounded(
        1000, 2, 100_000, doc="class-balanced samples scored at the end (mnist, fashion-mnist)")


@dataclass
class GANConfig(Recipe):
    """A GAN recipe; `inkfuse.train.train` trains it into a run dir with gan.json."""

    data: DataConfig = field(default_factory=DataConfig)  # labels = "class"
    gan: GANSettings = field(default_factory=GANSettings)
    # a GAN's usual settings: a constant rate after a short warm-up, no weight decay and no
    # clipping (the discriminator's Lipschitz bound is the spectral norm's business)
    train: TrainConfig = field(default_factory=lambda: TrainConfig(
        steps=20000, batch_size=64, lr=2e-4, lr_schedule="constant", warmup_steps=0,
        grad_clip=0.0, ema_decay=0.999))

    def check(self) -> None:
        d, g = self.data, self.gan
        check_data(d)
        check_train(self.train)
        if d.labels not in ("class", "none"):
            raise ConfigError(f"data.labels = {d.labels!r}: a GAN is class-conditional "
                              "('class') or unconditional ('none')")
        if d.labels == "none" and g.num_classes:
            raise ConfigError(f"gan.num_classes = {g.num_classes} needs class labels: set "
                              "data.labels = 'class' or gan.num_classes = 0")
        if d.vae or d.low_res:
            raise ConfigError("a GAN recipe takes no data.vae or data.low_res: it generates "
                              "pixels from noise")
        if d.size % 4:
            raise ConfigError(f"data.size = {d.size} must be divisible by 4: the generator "
                              "doubles a size/4 grid twice")
        if g.image_size and g.image_size != d.size:
            raise ConfigError(f"gan.image_size = {g.image_size} but data.size = {d.size}; leave "
                              "it at 0 to follow the data")
        widths = [g.g_channels, 2 * g.g_channels, 4 * g.g_channels]
        if any(w % g.groups for w in widths):
            raise ConfigError(f"gan.g_channels = {g.g_channels} gives widths {widths}, which "
                              f"must all be divisible by gan.groups = {g.groups}")
