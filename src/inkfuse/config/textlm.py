"""The text-LM recipe (an Imagen-style frozen text encoder): `[data]` (the shared DataConfig:
shapes captions or a folder with captions.csv; only the captions are read), `[textlm]`
(`TextLMSettings`: tokenizer, transformer, masking, evaluation size) and `[train]` (the shared
TrainConfig, with the text LM's own defaults); and `TextLMModelConfig`, the resolved
architecture stored in `textlm.json` beside the weights.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from inkfuse.config.clip import check_caption_recipe
from inkfuse.config.core import Recipe, bounded
from inkfuse.config.sections import DataConfig, TrainConfig
from inkfuse.errors import ConfigError


@dataclass
class TextLMModelConfig:
    """Everything needed to rebuild the network; stored in `textlm.json` beside the weights.
    `vocab_size` is the tokenizer's: the model adds one `<mask>` embedding row after it."""

    vocab_size: int = 512
    context_length: int = 32
    width: int = 128
    layers: int = 3
    heads: int = 4

    @property
    def embed_dim(self) -> int:
        """The pooled embedding is the mean of the token states, with no projection (as
        Imagen's T5 pooling), so it is as wide as they are."""
        return self.width


@dataclass
class TextLMSettings:
    """The `[textlm]` table: the tokenizer, the bidirectional transformer, the masking rate and
    how many held-out captions score it."""

    vocab_size: int = bounded(512, 259, 100_000, doc="BPE vocabulary incl. 256 bytes + 3 "
                                                      "specials (the model adds <mask>)")
    context_length: int = bounded(32, 4, 1024, doc="tokens per prompt, incl. <sot> and <eot>")
    width: int = bounded(128, 8, 4096, doc="transformer width (= the pooled embedding width)")
    layers: int = bounded(3, 1, 48)
    heads: int = bounded(4, 1, 64)
    mask_prob: float = bounded(0.15, 0.0, 1.0, doc="share of a caption's tokens to predict, in "
                                                   "(0, 1): BERT's 15 %")
    eval_count: int = bounded(512, 16, 100_000, doc="held-out captions for masked accuracy")


@dataclass
class TextLMConfig(Recipe):
    """A masked-language-model recipe; `inkfuse.train.train` trains it into a run dir with
    textlm.json, which a text-conditioned diffusion run can read like a CLIP's."""

    data: DataConfig = field(default_factory=lambda: DataConfig(caption_dropout=0.5))
    textlm: TextLMSettings = field(default_factory=TextLMSettings)
    train: TrainConfig = field(default_factory=lambda: TrainConfig(
        batch_size=128, weight_decay=0.01, ema_decay=0.0))

    def check(self) -> None:
        t = self.textlm
        check_caption_recipe(self, "text-LM", "textlm", t.width, t.heads)
        if not 0 < t.mask_prob < 1:
            raise ConfigError(f"textlm.mask_prob = {t.mask_prob} must lie strictly between 0 "
                              "and 1 (with 1 nothing is left to predict from); BERT uses 0.15")
