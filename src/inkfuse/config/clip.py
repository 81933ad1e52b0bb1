"""The CLIP recipe: `[data]` (the shared DataConfig: shapes captions or a folder with
captions.csv), `[clip]` (`ClipSettings`: tokenizer, towers, zero-shot prompts, evaluation size)
and `[train]` (the shared TrainConfig, with CLIP's own defaults); and `ClipModelConfig`, the
resolved architecture stored in `clip.json` beside the weights.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from inkfuse.config.core import Recipe, bounded, listed
from inkfuse.config.sections import DataConfig, TrainConfig, check_data, check_train
from inkfuse.errors import ConfigError


def check_caption_recipe(recipe: Recipe, what: str, section: str, width: int, heads: int) -> None:
    """What every text-encoder recipe (CLIP, text LM) needs: captions to read (shapes or a
    captioned folder), valid data and train tables, no image augmentation (a flip would swap
    left and right in the captions) and a transformer width its heads divide."""
    d = recipe.data
    if d.name not in ("shapes", "folder"):
        raise ConfigError(f"data.name = {d.name!r}: a {what} trains on captions, 'shapes' or a "
                          "'folder' with captions.csv")
    check_data(d)
    check_train(recipe.train)
    if d.hflip or d.crop_padding or d.vae or d.low_res or d.holdout:
        raise ConfigError(f"a {what} recipe takes no data.hflip, crop_padding, vae, low_res or "
                          "holdout (a flip would swap left and right in the captions)")
    if width % heads:
        raise ConfigError(f"{section}.width = {width} is not divisible by {section}.heads = "
                          f"{heads}; pick a width that is a multiple of the head count")


@dataclass
class ClipModelConfig:
    """Everything needed to rebuild the network; stored in `clip.json` beside the weights."""

    image_size: int = 32
    in_channels: int = 3
    channels: list[int] = field(default_factory=lambda: [32, 64, 128])
    groups: int = 8
    vocab_size: int = 512
    context_length: int = 32
    width: int = 128
    layers: int = 3
    heads: int = 4
    embed_dim: int = 128


@dataclass
class ClipSettings:
    """The `[clip]` table: the two towers, the tokenizer, and how the model is scored."""

    vocab_size: int = bounded(512, 259, 100_000, doc="BPE vocabulary incl. 256 bytes + 3 specials")
    context_length: int = bounded(32, 4, 1024, doc="tokens per prompt, incl. <sot> and <eot>")
    channels: list[int] = listed([32, 64, 128], doc="image CNN stage widths (each at least 1)",
                                 lo=1)
    width: int = bounded(128, 8, 4096, doc="text transformer width")
    layers: int = bounded(3, 1, 48)
    heads: int = bounded(4, 1, 64)
    embed_dim: int = bounded(128, 2, 4096, doc="shared embedding width")
    templates: list[str] = listed(["a {}", "a photo of a {}"],
                                  doc="zero-shot prompts, averaged (CLIP's prompt ensembling)")
    eval_count: int = bounded(512, 16, 100_000, doc="held-out pairs for retrieval")
    hard_negatives: int = bounded(
        0, 0, 4, doc="NegCLIP: captions per image with attributes swapped between its objects "
                     "or the relation reversed, added as negatives (shapes only); 0 = plain CLIP")


@dataclass
class ClipConfig(Recipe):
    """A CLIP recipe; `inkfuse.train.train` trains it into a run dir with clip.json."""

    data: DataConfig = field(default_factory=lambda: DataConfig(caption_dropout=0.5))
    clip: ClipSettings = field(default_factory=ClipSettings)
    train: TrainConfig = field(default_factory=lambda: TrainConfig(
        batch_size=128, weight_decay=0.1, grad_clip=0.0, ema_decay=0.0))

    def check(self) -> None:
        d, c = self.data, self.clip
        check_caption_recipe(self, "CLIP", "clip", c.width, c.heads)
        if not c.channels:
            raise ConfigError("clip.channels needs at least one image stage, e.g. [32, 64, 128]")
        # the image tower halves the image between stages (2x average pooling)
        if d.size >> (len(c.channels) - 1) < 1:
            raise ConfigError(f"clip.channels has {len(c.channels)} stages, which halve "
                              f"data.size = {d.size} below 1 px; use fewer stages or larger "
                              "images")
        if any("{}" not in t for t in c.templates):
            raise ConfigError("every clip.templates entry needs a {} for the class name")
        if c.hard_negatives and d.name != "shapes":
            raise ConfigError("clip.hard_negatives needs the shapes captions (it edits their "
                              "scenes); set it to 0 for a folder of captions")
        if self.train.batch_size < 2:
            raise ConfigError("train.batch_size must be at least 2: each pair is the others' "
                              "negative")
