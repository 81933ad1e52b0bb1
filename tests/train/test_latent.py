"""Latent diffusion: a U-Net trained on a frozen VAE's latents samples images of the data's size,
and the editing tools work through the autoencoder."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from inkfuse import pipelines
from inkfuse.config import VAEConfig, load_recipe
from inkfuse.editing import img2img, inpaint
from inkfuse.errors import CheckpointError, ConfigError
from inkfuse.train import train

VAE = VAEConfig.from_dict({
    "data": {"name": "shapes", "size": 16, "count": 256},
    "vae": {"base_channels": 8, "groups": 4, "down_factor": 4, "eval_count": 32},
    "train": {"steps": 20, "batch_size": 16, "warmup_steps": 2, "checkpoint_every": 20}})


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def latent_run(tmp_path_factory: pytest.TempPathFactory, tiny_overrides: list[str]) -> Path:
    """A 20-step VAE (16 px -> 4 x 4 x 4 latents), then a few U-Net steps on its latents."""
    root = tmp_path_factory.mktemp("latent")
    train(VAE, root / "vae", progress=False)
    config = load_recipe("shapes", [*tiny_overrides, f"data.vae='{root / 'vae'}'"])
    return train(config, root / "run", progress=False)


def test_latent_sampling_returns_images_of_the_data_size(latent_run: Path) -> None:
    run = pipelines.load_run(latent_run)
    assert run.shape == (4, 4, 4) and run.image_shape == (3, 16, 16)
    assert (latent_run / "vae" / "vae.json").is_file()  # the run keeps its decoder
    frames: list[torch.Tensor] = []
    images = pipelines.sample(run, 3, steps=3, progress=False,
                              on_step=lambda i, x, p: frames.append(x))
    assert images.shape == (3, 3, 16, 16) and images.abs().max() <= 1
    assert frames[0].shape == (3, 3, 16, 16)  # callbacks see decoded images too
    for sampler in ("ddpm", "unipc", "heun"):
        assert pipelines.sample(run, 2, sampler=sampler, steps=2, guidance=3.0,
                                progress=False).shape == (2, 3, 16, 16)


def test_latent_editing_keeps_the_known_pixels(latent_run: Path) -> None:
    run = pipelines.load_run(latent_run)
    image = torch.rand(1, 3, 16, 16) * 2 - 1
    mask = torch.zeros(16, 16)
    mask[4:9, 4:9] = 1
    filled = inpaint(run, image, mask, steps=3, progress=False)
    keep = mask == 0
    assert torch.equal(filled[0][:, keep], image[0][:, keep])
    assert not torch.allclose(filled[0][:, ~keep], image[0][:, ~keep])
    assert torch.equal(img2img(run, image, strength=1e-4, steps=3, progress=False), image)
    assert img2img(run, image, strength=0.5, steps=4, progress=False).shape == (1, 3, 16, 16)


def test_latent_settings_are_checked(tmp_path: Path, tiny_overrides: list[str]) -> None:
    with pytest.raises(ConfigError, match="hflip"):
        load_recipe("shapes", [f"data.vae='{tmp_path}'", "data.hflip=true"])
    config = load_recipe("shapes", [*tiny_overrides, f"data.vae='{tmp_path / 'none'}'"])
    with pytest.raises(CheckpointError, match="vae"):
        train(config, tmp_path / "run", progress=False)
