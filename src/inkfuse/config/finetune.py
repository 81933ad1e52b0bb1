"""The fine-tune recipe (DreamBooth, Ruiz et al. 2023; LoRA, Hu et al. 2021): the base run's own
diffusion recipe, every section as it trained, plus a `[finetune]` table (`FinetuneSettings`)
saying what was done to it, and a `[train]` table of its own.

Being the base recipe, it is a diffusion `Config`: the fine-tuned run dir samples, loads and
trains through the code every run does, and its config.json records both what the network is
and how it was fine-tuned.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from inkfuse.config.core import bounded
from inkfuse.config.sections import Config, TrainConfig
from inkfuse.errors import ConfigError


@dataclass
class FinetuneSettings:
    """The `[finetune]` table: the base run, the subject, the prior-preservation class and
    whether only low-rank adapters train."""

    base: str = field(default="", metadata={
        "doc": "the run fine-tuned, relative to this run dir (so the two can move together)"})
    base_weights: str = field(default="", metadata={
        "doc": "sha256 of the base's EMA weights when it was fine-tuned: adapters apply to "
               "those weights only"})
    images: str = field(default="", metadata={
        "doc": "the subject's image folder (captions.csv `path,caption`, else `prompt`)"})
    prompt: str = field(default="", metadata={"doc": "the caption of images without one"})
    class_prompt: str = field(default="", metadata={
        "doc": "prior preservation: the class the subject belongs to, e.g. 'a circle' "
               "(empty = none)"})
    prior_weight: float = bounded(1.0, 0.0, 100.0, doc="λ of the prior-preservation term "
                                                      "(Ruiz et al. use 1)")
    class_images: int = bounded(100, 1, 100_000, doc="class images the base model draws once "
                                                     "from class_prompt")
    lora: int = bounded(0, 0, 1024, doc="rank of the low-rank adapters; 0 = fine-tune every "
                                        "weight")
    lora_alpha: float = bounded(0.0, 0.0, 4096.0, doc="adapters' scale alpha / rank (Hu et "
                                "al.); 0 = the rank, a scale of 1")


@dataclass
class FinetuneConfig(Config):
    """A diffusion recipe fine-tuned from a run (`inkfuse.train.finetune`)."""

    # a few hundred steps from weights that already draw, at a rate well below a from-scratch
    # run's (DreamBooth's 5e-6 is for Stable Diffusion's 860 M parameters; a tiny U-Net takes
    # more); the EMA's warm-up, (1 + k) / (10 + k), averages about the last tenth of the steps
    train: TrainConfig = field(default_factory=lambda: TrainConfig(
        steps=300, batch_size=4, lr=1e-4, warmup_steps=10, checkpoint_every=100))
    finetune: FinetuneSettings = field(default_factory=FinetuneSettings)

    def check(self) -> None:
        super().check()
        f = self.finetune
        if not (f.base and f.images and f.prompt):
            raise ConfigError("finetune.base, finetune.images and finetune.prompt must be set: "
                              "the run, the subject's images and their caption")
        if self.data.labels != "text":
            raise ConfigError(f"the base run {f.base} is conditioned on data.labels = "
                              f"{self.data.labels!r}, not on text: fine-tuning teaches a prompt; "
                              "fine-tune a text run (e.g. recipe shapes-text)")
        if self.data.low_res:
            raise ConfigError(f"the base run {f.base} is a super-resolution model: fine-tune "
                              "the base of the cascade, which draws from noise")
        if f.class_prompt and f.prior_weight == 0:
            raise ConfigError("finetune.prior_weight = 0 would draw class images and never use "
                              "them: give a weight > 0 (1 is the paper's) or no class prompt")
        if self.train.ema_snapshots_every or self.train.eval_every:
            raise ConfigError("train.ema_snapshots_every and train.eval_every are for runs "
                              "trained from scratch; set them to 0 for a fine-tune")
