"""A VAE run dir: `vae.safetensors` (weights, with the latent scale factor as a buffer) and
`vae.json` (format tag, resolved architecture, image size, recipe, metrics). Read, written and
copied only here; `diffusion.latent.LatentSpace` is what a diffusion run holds of it.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from inkfuse.artifacts import checkpoint
from inkfuse.artifacts.checkpoint import load_tensors, read_json, save_tensors, write_json
from inkfuse.config import VAEConfig, VAEModelConfig, build_section
from inkfuse.diffusion.latent import LatentSpace
from inkfuse.errors import CheckpointError, ConfigError
from inkfuse.io import copy_files
from inkfuse.nn.vae import AutoencoderKL

FORMAT = "inkfuse-vae-1"
WEIGHTS, META = "vae.safetensors", "vae.json"


def save_vae(run: Path, model: AutoencoderKL, cfg: VAEConfig, metrics: dict[str, Any]) -> None:
    """Weights (with the scale factor) first, then the JSON that describes them; each atomic."""
    run.mkdir(parents=True, exist_ok=True)
    save_tensors(run / WEIGHTS, model.state_dict(), kind="vae")  # atomic itself
    write_json(run / META, {"format": FORMAT, "model": asdict(model.cfg),
                            "image_size": model.image_size, "config": cfg.to_dict(),
                            "metrics": metrics})


def load_vae(run_dir: str | Path, device: str | torch.device = "cpu") -> AutoencoderKL:
    """The trained autoencoder of a VAE run dir (`inkfuse.train.train`), in eval mode.

    Every tensor is checked against the architecture in vae.json, so a file of another model
    gives a CheckpointError naming the first mismatch rather than a shape error deep in torch.
    """
    run = Path(run_dir)
    if not (run / META).is_file() and checkpoint.find(run) is not None:
        raise CheckpointError(f"{run} holds a checkpoint but no finished model; run "
                              "`inkfuse vae train` with the same --out again to finish it")
    meta = read_json(run / META)
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CheckpointError(f"{run / META} is not an inkfuse VAE (no '{FORMAT}' tag); "
                              "train one with `inkfuse vae train`")
    try:
        mcfg = build_section(VAEModelConfig, meta["model"], "model", str(run / META))
        model = AutoencoderKL(mcfg, int(meta["image_size"]))
    except (ConfigError, KeyError, TypeError, ValueError, RuntimeError) as e:
        raise CheckpointError(f"{run / META} has a broken model section ({e}); "
                              "train the model again") from None
    weights = load_tensors(run / WEIGHTS)
    checkpoint.check_weights(weights, model.state_dict(), run / WEIGHTS, META)
    model.load_state_dict(weights)
    return model.to(device).eval()


def load_latent_space(run_dir: str | Path, device: str | torch.device = "cpu") -> LatentSpace:
    vae = load_vae(run_dir, device)
    vae.requires_grad_(False)
    return LatentSpace(vae)


def copy_vae(src: str | Path, dst: Path) -> None:
    """Copy a VAE run into `dst` (refusing a broken one first), so the diffusion run keeps the
    decoder its latents need."""
    load_vae(src)
    copy_files(src, dst, (WEIGHTS, META))
