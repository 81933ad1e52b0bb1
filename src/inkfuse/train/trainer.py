"""`train(recipe, out)`: the one way in, whatever the recipe trains. The recipe's type picks the
model kind (`train.diffusion`, `train.vae`, `train.clip`, `train.textlm`, `train.gan`);
`train.loop` does the rest."""

from __future__ import annotations

from pathlib import Path

from inkfuse.config import (
    ClipConfig,
    Config,
    FinetuneConfig,
    GANConfig,
    TextLMConfig,
    VAEConfig,
)
from inkfuse.errors import ConfigError
from inkfuse.train import loop
from inkfuse.train.clip import ClipKind
from inkfuse.train.diffusion import DiffusionKind
from inkfuse.train.finetune import FinetuneKind
from inkfuse.train.gan import GANKind
from inkfuse.train.prior import train_after_decoder
from inkfuse.train.textlm import TextLMKind
from inkfuse.train.vae import VAEKind

KINDS: dict[type, type[loop.Kind]] = {Config: DiffusionKind, VAEConfig: VAEKind,
                                      ClipConfig: ClipKind, TextLMConfig: TextLMKind,
                                      GANConfig: GANKind, FinetuneConfig: FinetuneKind}


def train(config: Config | VAEConfig | ClipConfig | TextLMConfig | GANConfig, out: str | Path,
          *, progress: bool = True) -> Path:
    """Train (or resume) `config` in `out`; returns the run dir.

    A diffusion run dir holds config.json, checkpoint/, samples/ and loss.png; a VAE run dir
    vae.json and vae.safetensors (its held-out scores under "metrics" in vae.json) and
    reconstructions.png; a CLIP run dir clip.json and clip.safetensors (scores likewise) and
    similarity.png; a text-LM run dir textlm.json and textlm.safetensors (scores likewise); a GAN
    run dir gan.json and gan.safetensors (the generator; scores likewise) and samples.png.
    Every one holds checkpoint/ and log.jsonl, so a stopped run (Ctrl-C, `train.max_minutes`)
    continues where it stopped when called again. A recipe with a [prior] table (unCLIP) then
    trains the diffusion prior into RUN/prior, once the decoder is done (`train.prior`)."""
    kind = KINDS.get(type(config))
    if kind is None:
        raise ConfigError(f"train() takes a recipe from inkfuse.config.load_recipe (Config, "
                          f"VAEConfig, ClipConfig, TextLMConfig or GANConfig), not a "
                          f"{type(config).__name__}")
    run_dir = loop.run(config, out, kind, progress=progress)
    if type(config) is Config and config.prior.steps:  # not a fine-tune of such a run
        train_after_decoder(config, run_dir, progress=progress)
    return run_dir
