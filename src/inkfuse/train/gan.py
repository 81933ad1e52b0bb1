"""The class-conditional GAN (`nn.gan.GAN`) as a training kind, on the one loop like every
other model.

    config = load_recipe("gan-fashion-mnist", ["train.max_minutes=5"])
    train(config, "runs/gan")               # runs/gan/gan.json: architecture, recipe, metrics
    generator, meta = load_gan("runs/gan")

The loop has one optimizer and one loss per step, so a step is simultaneous gradient descent on
both players: the loss is the discriminator's hinge loss plus the generator's, and `GAN.forward`
routes the gradients so that each network gets only its own loss's (the fakes detached in the
discriminator's term, the discriminator's parameters detached in the generator's). With
spectral norm on the discriminator and the hinge loss that trains reliably (Miyato et al. 2018
train with one D step per G step in their setting C: lr 2e-4, β = (0.5, 0.999)). The two
time-scale update rule (Heusel et al. 2017) is a learning-rate multiple for the
discriminator's parameter group (`gan.d_lr_scale`); Adam's betas are the group's own. The fakes
of a step ask for the classes of its real batch, so the discriminator sees every class as often
real as fake; z comes from the step's generator, so a resumed run ends with the same weights.

After training (or running out of time): `samples.png` (a row per class) from the EMA
generator and, for mnist / fashion-mnist, the `fd_cls` (and for a class-conditional GAN the
class accuracy) of `gan.eval_count` class-balanced samples, in gan.json.
"""

from __future__ import annotations

from dataclasses import fields
from typing import Any

import torch
from torch import Tensor, nn

from inkfuse.artifacts.gan import save_gan
from inkfuse.config import GANConfig, GANModelConfig
from inkfuse.data import ImageDataset, build_dataset
from inkfuse.data.transforms import augment
from inkfuse.errors import ConfigError
from inkfuse.metrics import classifier
from inkfuse.metrics.evaluation import evaluate_images
from inkfuse.nn.gan import GAN, Generator, generate
from inkfuse.train.loop import HELD_OUT_SEED, Kind, seed_for
from inkfuse.viz import save_grid

GRID_COLUMNS = 8


def resolve(cfg: GANConfig, data: ImageDataset) -> GANModelConfig:
    """The architecture with what the data decides filled in: channels, classes, size."""
    g, classes = cfg.gan, len(data.class_names)
    if g.in_channels and g.in_channels != data.channels:
        raise ConfigError(f"gan.in_channels = {g.in_channels} but the images have "
                          f"{data.channels} channels; leave it at 0 to follow the data")
    if g.num_classes and g.num_classes < classes:
        raise ConfigError(f"gan.num_classes = {g.num_classes} but the data has {classes} "
                          "classes; leave it at 0 to follow the data")
    arch = {f.name: getattr(g, f.name) for f in fields(GANModelConfig)}
    return GANModelConfig(**arch | {"in_channels": data.channels, "image_size": data.size,
                                    "num_classes": g.num_classes or classes})


def balanced_labels(generator: Generator, n: int) -> Tensor:
    """Class ids [n], sample i of class i mod C (all 0 for an unconditional GAN)."""
    return torch.arange(n) % max(1, generator.cfg.num_classes)


def sample_grid(generator: Generator, path: Any, seed: int) -> None:
    """A row of GRID_COLUMNS samples per class (one row for an unconditional GAN)."""
    k = max(1, generator.cfg.num_classes)
    labels = torch.arange(k).repeat_interleave(GRID_COLUMNS)
    save_grid(generate(generator, labels, seed), path, nrow=GRID_COLUMNS)


def score_generator(generator: Generator, cfg: GANConfig, n: int, seed: int
                    ) -> dict[str, float]:
    """fd_cls (and class accuracy if conditional) of `n` class-balanced samples; {} for data
    without a domain classifier."""
    if cfg.data.name not in classifier.DATASETS:
        return {}
    conditional = generator.cfg.num_classes > 0
    labels = balanced_labels(generator, n)
    images = generate(generator, labels, seed)
    return evaluate_images(images, labels if conditional else None, cfg.data,
                           ["fd_cls", *(["accuracy"] if conditional else [])], progress=False)


class GANKind(Kind):
    label = "gan"
    sections = ("data", "gan")

    def setup(self) -> None:
        cfg, device = self.config, self.device
        data = build_dataset(cfg.data, seed=cfg.train.seed)
        self.arch, self.class_names = resolve(cfg, data), data.class_names
        self.data, self.size = data.to(device), len(data)
        # an unconditional GAN is a GAN of one class (`nn.gan.classes`)
        self.labels = (data.labels if data.labels is not None
                       else torch.zeros(len(data), dtype=torch.long)).to(device)

    def make_model(self) -> nn.Module:
        self.model = GAN(self.arch).to(self.device)
        return self.model

    def param_groups(self, model: nn.Module) -> list[dict[str, Any]]:
        """The generator at train.lr, the discriminator at gan.d_lr_scale times it (TTUR)."""
        g = self.config.gan
        betas = (g.beta1, g.beta2)
        return [{"params": list(model.generator.parameters()), "betas": betas},
                {"params": list(model.discriminator.parameters()), "betas": betas,
                 "lr_scale": g.d_lr_scale}]

    def batch(self, idx: Tensor, gen: torch.Generator) -> tuple[Tensor, Tensor, Tensor]:
        """Real images [B, C, S, S] (augmented as data asks), their classes [B], and z [B, z_dim]
        for the fakes of the same classes."""
        d, i = self.config.data, idx.to(self.device)
        real = augment(self.data.to_float(i), hflip=d.hflip, crop_padding=d.crop_padding,
                       generator=gen)
        z = torch.randn(len(i), self.arch.z_dim, generator=gen, device=self.device)
        return real, self.labels[i], z

    def loss(self, forward: nn.Module, batch: tuple[Tensor, Tensor, Tensor],
             gen: torch.Generator) -> tuple[Tensor, dict[str, float]]:
        out = forward(*batch)
        return out["d_loss"] + out["g_loss"], {k: v.item() for k, v in out.items()}

    def finish(self, step: int, weights: dict[str, Tensor]) -> None:
        """Score the final (EMA) generator, draw its grid, save it."""
        self.model.load_state_dict(weights)
        generator = self.model.generator.eval()
        seed = seed_for(self.config.train.seed, HELD_OUT_SEED)
        metrics = {"steps": step, **score_generator(generator, self.config,
                                                    self.config.gan.eval_count, seed)}
        sample_grid(generator, self.run_dir / "samples.png", seed)
        save_gan(self.run_dir, generator, self.config, self.class_names, metrics)
