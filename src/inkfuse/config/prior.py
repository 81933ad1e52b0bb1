"""The `[prior]` table of a diffusion recipe: DALL-E 2's diffusion prior (Ramesh et al. 2022), a
small transformer that maps a caption's CLIP text embedding and token features to a CLIP *image*
embedding, for the decoder of a `data.labels = "clip-image"` run to draw. `steps = 0` (the
default, every recipe without the table) trains no prior.

`PriorModelConfig` is what the prior *is* (its network and its diffusion): `prior.json` stores it
beside the weights, and a resumed prior must share it with its checkpoint. `PriorConfig` adds how
it trains (its own steps, batch and learning rate, on the shared loop) and how it samples (its own
sampler, steps and guidance, used whenever a prompt goes through it).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from inkfuse.config.core import bounded
from inkfuse.errors import ConfigError


@dataclass
class PriorModelConfig:
    """The prior's transformer and diffusion. The widths of its inputs are the CLIP's."""

    width: int = bounded(128, 8, 4096, doc="transformer width")
    depth: int = bounded(4, 1, 48, doc="transformer blocks")
    heads: int = bounded(4, 1, 64)
    timesteps: int = bounded(1000, 2, 100_000, doc="steps of its cosine schedule")
    cond_drop_prob: float = bounded(0.1, 0.0, 1.0, doc="training drops the text (for CFG) with "
                                                       "this probability: the empty prompt "
                                                       "takes its place")
    embed_dim: int = bounded(0, 0, 100_000, doc="CLIP embedding width; 0 = the CLIP's")
    token_dim: int = bounded(0, 0, 100_000, doc="CLIP token-feature width; 0 = the CLIP's")


@dataclass
class PriorConfig(PriorModelConfig):
    """The `[prior]` table: the model, then its training and its sampling."""

    steps: int = bounded(0, 0, None, doc="training steps of the prior (0 = no prior); it trains "
                                         "into RUN/prior after the decoder")
    batch_size: int = bounded(128, 1, 1_000_000)
    lr: float = bounded(5e-4, 0.0, 10.0)
    warmup_steps: int = bounded(100, 0, None)
    weight_decay: float = bounded(0.0, 0.0, 10.0)
    ema_decay: float = bounded(0.998, 0.0, 1.0)
    checkpoint_every: int = bounded(500, 1, None)
    sampler: str = field(default="ddim", metadata={"doc": "how a prompt's image embedding is "
                                                          "drawn (`inkfuse sample --help`)"})
    sample_steps: int = bounded(64, 1, 100_000, doc="sampler steps of the prior (DALL-E 2: 64)")
    guidance: float = bounded(2.0, 0.0, 100.0, doc="the prior's own CFG weight")


def check_prior(p: PriorConfig, labels: str) -> None:
    """A prior draws what a CLIP-image decoder reads, so it needs one; its heads must divide its
    width (attention splits the width into heads), which must be even (the sin and cos halves of
    the time embedding)."""
    if p.steps and labels != "clip-image":
        raise ConfigError(f"prior.steps = {p.steps} trains a diffusion prior, which needs a "
                          f"decoder of CLIP image embeddings, but data.labels = {labels!r}: set "
                          "data.labels = 'clip-image' (recipes/shapes-unclip.toml) or "
                          "prior.steps = 0")
    if p.width % 2:
        raise ConfigError(f"prior.width = {p.width} must be even (the sin and cos halves of the "
                          "time embedding); use an even width")
    if p.width % p.heads:
        raise ConfigError(f"prior.width = {p.width} is not divisible by prior.heads = "
                          f"{p.heads}; pick a width that is a multiple of the head count")
