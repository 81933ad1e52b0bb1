"""`train(recipe, out)`: the one way in, whatever the recipe trains. The recipe's type picks the
model kind (`train.diffusion`, `train.vae`, `train.clip`); `train.loop` does the rest."""

from __future__ import annotations

from pathlib import Path

from inkfuse.config import ClipConfig, Config, VAEConfig
from inkfuse.errors import ConfigError
from inkfuse.train import loop
from inkfuse.train.clip import ClipKind
from inkfuse.train.diffusion import DiffusionKind
from inkfuse.train.vae import VAEKind

KINDS: dict[type, type[loop.Kind]] = {Config: DiffusionKind, VAEConfig: VAEKind,
                                      ClipConfig: ClipKind}


def train(config: Config | VAEConfig | ClipConfig, out: str | Path, *,
          progress: bool = True) -> Path:
    """Train (or resume) `config` in `out`; returns the run dir.

    A diffusion run dir holds config.json, checkpoint/, samples/ and loss.png; a VAE run dir
    vae.json and vae.safetensors (its held-out scores under "metrics" in vae.json) and
    reconstructions.png; a CLIP run dir clip.json and clip.safetensors (scores likewise) and
    similarity.png. Every one holds checkpoint/ and log.jsonl, so a stopped run (Ctrl-C,
    `train.max_minutes`) continues where it stopped when called again."""
    kind = KINDS.get(type(config))
    if kind is None:
        raise ConfigError(f"train() takes a recipe from inkfuse.config.load_recipe (Config, "
                          f"VAEConfig or ClipConfig), not a {type(config).__name__}")
    return loop.run(config, out, kind, progress=progress)
