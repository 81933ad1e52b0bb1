"""The textual-inversion recipe (Gal et al. 2022): `[invert]` (`InvertSettings`: the images, the
new token, the word it starts from) and `[train]` (the shared TrainConfig, with inversion's own
defaults). `inkfuse.train.invert` learns the token's embedding row into the run's RUN/tokens;
the run itself is where that recipe is kept, so it names no run.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from inkfuse.config.core import Recipe
from inkfuse.config.sections import TrainConfig, check_train
from inkfuse.errors import ConfigError


@dataclass
class InvertSettings:
    """The `[invert]` table."""

    images: str = field(default="", metadata={
        "doc": "folder of the images that show the new concept (3 to 10 are usual), captioned "
               "by its captions.csv (`path,caption`, each caption with the token) or else by "
               "templates such as 'a <token>'"})
    token: str = field(default="", metadata={
        "doc": "the new word, without spaces and unknown to the text encoder, e.g. "
               "'<magenta-ish>'"})
    init: str = field(default="", metadata={
        "doc": "a known word whose embedding the token starts from (Gal et al.'s coarse "
               "descriptor); empty = the mean embedding of every word the text encoder read"})


@dataclass
class InvertConfig(Recipe):
    """What `inkfuse invert` runs; its [train] table is the loop's."""

    invert: InvertSettings = field(default_factory=InvertSettings)
    # one row of a few hundred numbers: a large constant rate, no weight decay (it would pull
    # the row towards 0, an embedding no caption had), no clipping, no EMA (Gal et al. use
    # none); a batch of 8 at 16 px is a fraction of a second per step on a CPU
    train: TrainConfig = field(default_factory=lambda: TrainConfig(
        steps=600, batch_size=8, lr=5e-3, lr_schedule="constant", warmup_steps=0,
        weight_decay=0.0, grad_clip=0.0, ema_decay=0.0, precision="fp32",
        checkpoint_every=100, log_every=10))

    def check(self) -> None:
        check_train(self.train)
        if not self.invert.images or not self.invert.token:
            raise ConfigError("invert.images and invert.token must be set: the folder of "
                              "images and the new word (--images DIR --token '<name>')")
        if self.train.ema_snapshots_every or self.train.eval_every:
            raise ConfigError("train.ema_snapshots_every and train.eval_every score or average "
                              "a diffusion model; set them to 0 for textual inversion")
