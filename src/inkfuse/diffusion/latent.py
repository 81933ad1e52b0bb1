"""Latent diffusion (Rombach et al. 2022): the U-Net denoises VAE latents instead of pixels.

A frozen autoencoder maps a 64 x 64 image to, say, 4 x 16 x 16 latents; the diffusion model
learns and samples there (16x fewer positions) and the decoder turns its samples into images.
Latents are multiplied by the VAE's `scale_factor` (1 / their std) so they have about unit
variance, as the noise schedule assumes. Training draws z from the encoder's posterior each time
an image is used (its mean and std are computed once for the whole dataset), as latent
diffusion does; editing encodes with the posterior mean.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass
class LatentSpace:
    vae: torch.nn.Module  # inkfuse.nn.vae.AutoencoderKL, frozen

    @property
    def scale(self) -> float:
        return float(self.vae.scale_factor)

    def shape(self, size: int) -> tuple[int, int, int]:
        """[C, h, w] of the latents of a size x size image."""
        return self.vae.latent_shape(size)

    @torch.no_grad()
    def encode(self, images: Tensor) -> Tensor:
        """Images in [-1, 1] -> scaled latents (the posterior mean)."""
        return self.vae.encode(images).mean * self.scale

    @torch.no_grad()
    def decode(self, z: Tensor, batch: int = 256) -> Tensor:
        """Scaled latents -> images in [-1, 1] (clamped), in batches."""
        return torch.cat([self.vae.decode(z[i:i + batch] / self.scale).float().clamp(-1, 1)
                          for i in range(0, len(z), batch)])

    @torch.no_grad()
    def encode_dataset(self, images: Tensor, batch: int = 256) -> tuple[Tensor, Tensor]:
        """uint8 [N, C, H, W] -> the scaled posterior mean and std of every image."""
        device = self.vae.scale_factor.device
        means, stds = [], []
        for i in range(0, len(images), batch):
            posterior = self.vae.encode(images[i:i + batch].to(device).float() / 127.5 - 1)
            means.append(posterior.mean * self.scale)
            stds.append(posterior.std * self.scale)
        return torch.cat(means), torch.cat(stds)
