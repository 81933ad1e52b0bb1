"""The latent-diffusion autoencoder (`nn.vae.AutoencoderKL`) as a training kind: its loss, its
held-out scores, and what its run dir keeps.

    config = load_recipe("vae-shapes", ["train.steps=500"])
    train(config, "runs/vae-shapes")                  # runs/vae-shapes/vae.json: metrics
    vae = load_vae("runs/vae-shapes")
    z = vae.encode(x).mean * vae.scale_factor        # what a latent diffusion model trains on

A VAE recipe has three tables: `[data]` (the shared DataConfig: name, size, count, limit, ...;
labels are ignored), `[vae]` (the architecture and the loss settings, `VAESettings`) and
`[train]` (the shared TrainConfig). The loss is Stable Diffusion's without the GAN: an L1 (or
L2) pixel error plus `kl_weight` x KL(q(z|x) || N(0, I)), with SD's normalisation
(reconstruction summed over pixels, KL over latent elements), both divided by the pixel count so
the logged loss reads as a per-pixel error. The adversarial term of SD is left out: it sharpens
textures at 256 px, costs a second network and a fragile schedule, and the small flat images
here do not need it.

Optional perceptual term (`vae.perceptual_weight`, default 0): an LPIPS-style distance between
the conv features of one of the project's own shipped classifiers (`metrics/weights`), the only
trained vision networks available offline. LPIPS proper needs VGG/AlexNet weights we cannot
download, and the Inception network of FID is a 299 px pickle. Those classifiers saw 28 x 28
grey digits and clothes, so the term is allowed for 1-channel data only: the MNIST classifier for
MNIST, the Fashion-MNIST one for everything else grey.

After training (or running out of time): PSNR and SSIM (`metrics.image_quality`) of
reconstructions of held-out images (the other split, a different seed for shapes, the last tenth
of a folder), the latent scale factor (1 / std of latents of training images), the latent shape,
and `reconstructions.png` (originals over reconstructions). A run dir holds `vae.safetensors`
and `vae.json` (format tag, architecture, recipe, metrics), plus `checkpoint/`, `log.jsonl` and
`loss.png`.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from dataclasses import fields, replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from inkfuse.artifacts.vae import save_vae
from inkfuse.config import DEFAULT_CHANNEL_MULT, VAEConfig, VAEModelConfig, VAESettings
from inkfuse.data import ImageDataset, build_dataset
from inkfuse.data.transforms import augment
from inkfuse.errors import ConfigError
from inkfuse.metrics.classifier import INPUT_SIZE, load_classifier
from inkfuse.metrics.image_quality import psnr, ssim
from inkfuse.nn.vae import AutoencoderKL, DiagonalGaussian
from inkfuse.train.loop import HELD_OUT_SEED, Kind
from inkfuse.viz import save_grid

GRID_COLUMNS = 8


# ----------------------------------------------------------------------------- data


def vae_datasets(cfg: VAEConfig) -> tuple[ImageDataset, ImageDataset]:
    """(training images, held-out images): the other split of a dataset that has splits, images
    from another seed for shapes, the last tenth (at most eval_count) of a folder or array."""
    data, seed, n_held = replace(cfg.data, labels="none"), cfg.train.seed, cfg.vae.eval_count
    if data.name == "shapes":
        held = replace(data, count=n_held, limit=0)
        return build_dataset(data, seed=seed), build_dataset(held, seed=seed + HELD_OUT_SEED)
    if data.name in ("folder", "npy"):
        full = build_dataset(data, seed=seed)
        n = min(n_held, max(1, len(full) // 10))
        return replace(full, images=full.images[:-n]), replace(full, images=full.images[-n:])
    other = "test" if data.split == "train" else "train"
    held = replace(data, split=other, limit=n_held)
    return build_dataset(data, seed=seed), build_dataset(held, seed=seed)


def resolve(cfg: VAEConfig, channels: int) -> VAEModelConfig:
    """The architecture with what the data decides filled in."""
    v = cfg.vae
    if v.in_channels and v.in_channels != channels:
        raise ConfigError(f"vae.in_channels = {v.in_channels} but the images have {channels} "
                          "channels; leave it at 0 to follow the data")
    arch = {f.name: getattr(v, f.name) for f in fields(VAEModelConfig)}
    return VAEModelConfig(**arch | {
        "in_channels": channels,
        "channel_mult": v.channel_mult or DEFAULT_CHANNEL_MULT[v.down_factor]})


# ----------------------------------------------------------------------------- loss


class ClassifierDistance(nn.Module):
    """LPIPS-style distance in the conv features of a shipped classifier (module docstring):
    each unit's features unit-normalised over channels, squared differences summed over
    channels, averaged over positions, images and the four units. Frozen, in eval mode (it is
    no submodule of the VAE, so `model.train()` does not reach its BatchNorms)."""

    def __init__(self, dataset: str):
        super().__init__()
        self.size = INPUT_SIZE
        self.body = copy.deepcopy(load_classifier(dataset).body).eval().requires_grad_(False)

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        h = torch.cat([x, y])
        if h.shape[-1] != self.size:
            h = F.interpolate(h, size=(self.size, self.size), mode="bilinear", antialias=True)
        total, units = h.new_zeros(()), 0
        for layer in self.body:
            h = layer(h)
            if isinstance(layer, nn.Sequential):  # a conv + BatchNorm + GELU unit
                fx, fy = F.normalize(h, dim=1).chunk(2)
                total, units = total + (fx - fy).square().sum(1).mean(), units + 1
        return total / units


def perceptual_net(cfg: VAEConfig, channels: int) -> ClassifierDistance | None:
    if not cfg.vae.perceptual_weight:
        return None
    if channels != 1:
        raise ConfigError(f"vae.perceptual_weight needs 1-channel images (these have "
                          f"{channels}): the only offline networks are the shipped MNIST and "
                          "Fashion-MNIST classifiers; set it to 0")
    return ClassifierDistance("mnist" if cfg.data.name == "mnist" else "fashion-mnist")


def vae_loss(x: Tensor, rec: Tensor, posterior: DiagonalGaussian, v: VAESettings,
             perceptual: ClassifierDistance | None = None) -> tuple[Tensor, dict[str, float]]:
    """(loss, its parts as floats); see the module docstring for the normalisation."""
    rec = rec.float()
    err = (rec - x).abs() if v.recon_loss == "l1" else (rec - x).square()
    recon = err.mean()
    kl = posterior.kl().mean() / x[0].numel()
    loss = recon + v.kl_weight * kl
    parts = {"recon": recon.item(), "kl": kl.item()}
    if perceptual is not None:
        p = perceptual(x, rec)
        loss = loss + v.perceptual_weight * p
        parts["perceptual"] = p.item()
    return loss, parts


# ----------------------------------------------------------------------------- the kind


class VAEKind(Kind):
    label = "vae"
    sections = ("data", "vae")

    def setup(self) -> None:
        config, device = self.config, self.device
        train, self.held = vae_datasets(config)
        self.arch = resolve(config, train.channels)
        self.perceptual = perceptual_net(config, train.channels)
        if self.perceptual is not None:
            self.perceptual.to(device)
        self.data, self.size = train.to(device), len(train)

    def make_model(self) -> nn.Module:
        self.model = AutoencoderKL(self.arch, self.data.size).to(self.device)
        return self.model

    def batch(self, idx: Tensor, gen: torch.Generator) -> Tensor:
        d = self.config.data
        return augment(self.data.to_float(idx.to(self.device)), hflip=d.hflip,
                       crop_padding=d.crop_padding, generator=gen)

    def loss(self, forward: nn.Module, x: Tensor, gen: torch.Generator
             ) -> tuple[Tensor, dict[str, float]]:
        rec, posterior = forward(x, gen)
        return vae_loss(x, rec, posterior, self.config.vae, self.perceptual)

    def finish(self, step: int, weights: dict[str, Tensor]) -> None:
        """Score the final weights on held-out images, set the scale factor, save."""
        self.model.load_state_dict(weights)
        metrics = {"steps": step, **evaluate_vae(self.model, self.held.images, self.data.images,
                                                 self.config.train.seed)}
        save_vae(self.run_dir, self.model, self.config, metrics)
        reconstruction_grid(self.model, self.held.images[:GRID_COLUMNS],
                            self.run_dir / "reconstructions.png")


# ----------------------------------------------------------------------------- evaluation


def _batches(images: Tensor, device: torch.device, batch: int = 256) -> Iterable[Tensor]:
    """uint8 images -> float [-1, 1] batches on `device`."""
    for i in range(0, len(images), batch):
        yield images[i:i + batch].to(device).float().div(127.5).sub(1.0)


@torch.no_grad()
def reconstruct(model: AutoencoderKL, images: Tensor) -> Tensor:
    """uint8 [N, C, H, W] -> reconstructions in [-1, 1] on the CPU, decoded from the posterior
    mean: the deterministic reconstruction, as scored."""
    device = model.scale_factor.device
    return torch.cat([model.decode(model.encode(x).mean).float().clamp(-1, 1).cpu()
                      for x in _batches(images, device)])


@torch.no_grad()
def latent_scale(model: AutoencoderKL, images: Tensor, seed: int) -> float:
    """1 / std of posterior samples of `images` (uint8), as Stable Diffusion measured 0.18215."""
    device = model.scale_factor.device
    gen = torch.Generator(device).manual_seed(seed)
    z = torch.cat([model.encode(x).sample(gen).flatten() for x in _batches(images, device)])
    return 1.0 / z.std().item()


def evaluate_vae(model: AutoencoderKL, held: Tensor, train_images: Tensor, seed: int = 0
                 ) -> dict[str, Any]:
    """PSNR/SSIM (dB, [0, 1]) of reconstructions of `held`; sets and reports the latent scale,
    measured on as many `train_images` (all uint8 [N, C, H, W])."""
    rec = reconstruct(model, held).add(1).div(2)
    ref = held.float().div(255)
    scale = latent_scale(model, train_images[:len(held)], seed)
    model.scale_factor.fill_(scale)
    return {"psnr": psnr(ref, rec).mean().item(), "ssim": ssim(ref, rec).mean().item(),
            "scale_factor": scale, "latent_shape": list(model.latent_shape(held.shape[-1])),
            "eval_images": len(held)}


def reconstruction_grid(model: AutoencoderKL, images: Tensor, path: Path) -> None:
    """Originals (uint8) in the top row, their reconstructions below."""
    original = images.float().div(127.5).sub(1.0)
    save_grid(torch.cat([original, reconstruct(model, images)]), path, nrow=len(images),
              labels=["original", "reconstruction"])
