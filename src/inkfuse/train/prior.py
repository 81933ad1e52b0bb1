"""DALL-E 2's diffusion prior as a training kind: CLIP text -> CLIP image embedding, for the
decoder of a `data.labels = "clip-image"` run (unCLIP, Ramesh et al. 2022).

    config = load_recipe("shapes-unclip")
    train(config, "runs/unclip")        # CLIP -> decoder -> prior, into runs/unclip/prior
    train_prior(prior_config("runs/old-unclip"), "runs/old-unclip")   # a decoder without one

The data are the decoder run's own: its training images, encoded once by the frozen CLIP's image
tower (the targets x0, scaled to the prior's space, `nn.prior.to_prior_space`), and their
captions, encoded at every step by its text tower (pooled embedding and token features), with
one of each image's shorter caption variants drawn when the data has them (`data.caption_dropout`,
the same draw as a text U-Net's: `train.diffusion.caption_source`). The text is dropped with
`prior.cond_drop_prob` and the empty prompt's encoding takes its place (for CFG); the loss is
`Denoiser.loss` with an x0 target on the prior's cosine schedule (`artifacts.prior`).

The prior trains on the shared loop into RUN/prior (its own checkpoint/, log.jsonl, exact resume,
lock, time budget); `finish` writes prior.json and prior.safetensors (the EMA weights), with how
close its samples come to the true image embeddings of training captions, against the text
embedding itself (what the decoder would read without a prior).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from inkfuse import pipelines
from inkfuse.artifacts import checkpoint
from inkfuse.artifacts.clip import load_conditioner
from inkfuse.artifacts.log import LOG, read_log
from inkfuse.artifacts.prior import (
    Prior,
    prior_denoiser,
    prior_dir,
    prior_schedule,
    save_prior,
)
from inkfuse.config import (
    Config,
    DataConfig,
    PriorConfig,
    PriorModelConfig,
    Recipe,
    TextConfig,
    TrainConfig,
    apply_overrides,
    load_recipe,
    replace,
)
from inkfuse.config.prior import check_prior
from inkfuse.data import build_dataset
from inkfuse.diffusion import Condition
from inkfuse.errors import ConfigError
from inkfuse.nn.prior import PriorTransformer, to_prior_space
from inkfuse.text.conditioner import is_pretrained
from inkfuse.train import loop
from inkfuse.train.diffusion import caption_source
from inkfuse.train.loop import HELD_OUT_SEED, Kind, seed_for

DEFAULT_RECIPE = "shapes-unclip"  # whose [prior] table a run without one gets
EVAL_PAIRS = 128  # training pairs whose embeddings `finish` compares


@dataclass
class PriorRecipe(Recipe):
    """What RUN/prior trains with: the decoder run's data and text encoder (so the same images,
    captions and frozen CLIP), its `[prior]` table, and the loop's `[train]` made from that
    table (`prior_recipe`)."""

    data: DataConfig = field(default_factory=DataConfig)
    text: TextConfig = field(default_factory=TextConfig)
    prior: PriorConfig = field(default_factory=PriorConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def check(self) -> None:
        check_prior(self.prior, self.data.labels)


def prior_recipe(config: Config) -> PriorRecipe:
    """The prior's recipe from a decoder recipe: its [prior] table's steps, batch, rate, EMA and
    checkpoints; the decoder's seed (the same images), device, precision, time budget, logging
    and clipping."""
    p, tc = config.prior, config.train
    if not p.steps:
        raise ConfigError("prior.steps = 0 trains no prior: give it steps, e.g. "
                          "--set prior.steps=3000")
    train = {"steps": p.steps, "batch_size": p.batch_size, "lr": p.lr,
             "warmup_steps": p.warmup_steps, "weight_decay": p.weight_decay,
             "ema_decay": p.ema_decay, "checkpoint_every": p.checkpoint_every,
             "seed": tc.seed, "device": tc.device, "precision": tc.precision,
             "max_minutes": tc.max_minutes, "log_every": tc.log_every,
             "grad_clip": tc.grad_clip}
    return PriorRecipe.from_dict({"data": asdict(config.data), "text": asdict(config.text),
                                  "prior": asdict(p), "train": train}, source="[prior]")


def architecture(p: PriorConfig) -> PriorModelConfig:
    """The model fields of a [prior] table."""
    return PriorModelConfig(**{f.name: getattr(p, f.name) for f in fields(PriorModelConfig)})


class PriorKind(Kind):
    label = "prior"
    sections = ("data", "prior")  # of the prior only its model fields (`saved_config`)

    def setup(self) -> None:
        c, device = self.config, self.device
        data = build_dataset(c.data, seed=c.train.seed)  # the decoder's own training images
        decoder = self.run_dir.parent
        spec = c.text.encoder if is_pretrained(c.text.encoder) else decoder / "clip"
        self.text = load_conditioner(spec, "both", device)
        fits = {"embed_dim": self.text.pooled_dim, "token_dim": self.text.token_dim}
        for key, width in fits.items():
            given = getattr(c.prior, key)
            if given and given != width:
                raise ConfigError(f"prior.{key} = {given} but the CLIP of {decoder} gives "
                                  f"{width}; leave it at 0 to follow the CLIP")
        self.config = replace(c, prior=fits)
        images = self.text.encode_images(data.images)  # [N, D] unit vectors
        self.targets = to_prior_space(images).to(device)  # x0 of the prior's diffusion
        self.captions = caption_source(data, self.text, device, trim=True)
        self.null = self.text.empty_prompt()
        self.schedule = prior_schedule(self.config.prior)
        self.size = len(data)
        self.held = images[:EVAL_PAIRS], data.captions[:EVAL_PAIRS]

    def make_model(self) -> nn.Module:
        self.net = PriorTransformer(architecture(self.config.prior)).to(self.device)
        return self.net

    def batch(self, idx: Tensor, gen: torch.Generator) -> tuple[Tensor, Condition]:
        """The image embeddings of examples `idx` [B, D] and their captions' condition, dropped
        for CFG."""
        i = idx.to(self.device)
        cond = self.captions(i, gen).dropped(self.config.prior.cond_drop_prob, gen)
        return self.targets[i], cond

    def loss(self, forward: nn.Module, batch: tuple[Tensor, Condition],
             gen: torch.Generator) -> tuple[Tensor, dict[str, float]]:
        x0, cond = batch
        return prior_denoiser(forward, self.schedule, self.null).loss(x0, cond,
                                                                      generator=gen), {}

    def saved_config(self, state: dict[str, Any] | None) -> dict[str, Any]:
        """The checkpoint's recipe, reduced to what a resumed prior must share: its data and the
        model fields of [prior]; its steps, rate and sampling settings may change."""
        saved = super().saved_config(state)
        model = {f.name for f in fields(PriorModelConfig)}
        return {"data": saved.get("data", {}),
                "prior": {k: v for k, v in saved.get("prior", {}).items() if k in model}}

    def finish(self, step: int, weights: dict[str, Tensor]) -> None:
        """Score the final (EMA) prior on training pairs; save it."""
        self.net.load_state_dict(weights)
        self.net.eval()
        metrics: dict[str, Any] = {"steps": step}
        losses = [r["loss"] for r in read_log(self.run_dir / LOG) if "loss" in r]
        if losses:
            metrics |= {"loss_first": losses[0], "loss_last": float(np.mean(losses[-10:]))}
        metrics |= self.alignment()
        save_prior(self.run_dir, self.net, self.config.prior, self.config, metrics)

    def alignment(self) -> dict[str, float]:
        """Mean cosines with the true CLIP image embedding of the first EVAL_PAIRS training
        images: of the prior's sample for the image's caption (`cosine_prior`), of the
        caption's text embedding itself (`cosine_text`: the decoder's input without a prior)
        and of the prior's sample for the next image's caption (`cosine_other`: how much of
        `cosine_prior` is the caption's own, not the prior's average embedding)."""
        images, captions = self.held
        prior = Prior(self.net, self.schedule, self.config.prior, self.text, self.null)
        cond = self.text.encode(captions)
        gen = torch.Generator(self.device).manual_seed(seed_for(self.config.train.seed,
                                                                HELD_OUT_SEED))
        with torch.no_grad():
            drawn = pipelines.sample_prior(prior, cond, gen)
        cos = lambda a, b: float((a * b).sum(-1).mean())  # noqa: E731 (unit vectors)
        return {"cosine_prior": cos(drawn, images), "cosine_text": cos(cond.vector, images),
                "cosine_other": cos(drawn.roll(1, 0), images)}


def train_prior(config: Config, run_dir: str | Path, *, progress: bool = True) -> Path:
    """Train (or resume) the diffusion prior of decoder run `run_dir` with `config` (the
    decoder's recipe, its [prior] table with steps), into RUN/prior; returns that folder. It
    needs the run's CLIP and data, not the decoder's weights."""
    return loop.run(prior_recipe(config), prior_dir(run_dir), PriorKind, progress=progress)


def train_after_decoder(config: Config, run_dir: Path, *, progress: bool = True) -> None:
    """`train`'s last stage of an unCLIP recipe: the prior, once the decoder has all its
    `train.steps` (a decoder stopped by its time budget resumes first, on the next call)."""
    ckpt = checkpoint.find(run_dir)
    done = ckpt is not None and checkpoint.read_json(ckpt / "state.json")["step"] >= \
        config.train.steps
    if done:
        train_prior(config, run_dir, progress=progress)


def prior_config(run_dir: str | Path, recipe: str | Path | None = None,
                 overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """The recipe `inkfuse prior train RUN` trains with: the run's own config.json, its [prior]
    table taken from `recipe` when given, else the run's own when it trains a prior
    (prior.steps > 0), else the built-in shapes-unclip's (a run trained before the table
    existed); then `overrides` (`prior.steps=6000`)."""
    path = Path(run_dir) / "config.json"
    if not Path(run_dir).is_dir():
        raise ConfigError(f"run dir {run_dir} does not exist: train the decoder first "
                          f"(`inkfuse train {DEFAULT_RECIPE}`)")
    raw = checkpoint.read_json(path)  # its structure checked (schema.py)
    raw.pop("dataset", None)
    own = Config.from_dict(raw, source=str(path)).prior
    if recipe is not None or not own.steps:
        raw["prior"] = asdict(load_recipe(recipe or DEFAULT_RECIPE, kind="diffusion").prior)
    return Config.from_dict(apply_overrides(raw, overrides, str(path)), source=str(path))
