"""Diffusion as a training kind: images (or a frozen VAE's latents) noised along the schedule,
the U-Net regressing the recipe's target through `Denoiser.loss`, with the condition (class,
context, caption through a frozen CLIP, low-res image) dropped for classifier-free guidance.

At every checkpoint it draws a sample grid from the EMA weights held in memory: a second copy of
the network (the one `Run` it samples from), so a grid costs no reload of the run dir; with
`train.eval_every` it scores a sample of the same copy (`train.scoring`).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn

from inkfuse import pipelines
from inkfuse.artifacts import checkpoint
from inkfuse.artifacts.clip import copy_clip, load_conditioner
from inkfuse.artifacts.run import Run
from inkfuse.artifacts.textlm import is_textlm_dir
from inkfuse.artifacts.vae import copy_vae, load_latent_space
from inkfuse.config import ClipConfig, Config, TextLMConfig, replace
from inkfuse.data import ImageDataset, build_dataset
from inkfuse.data.transforms import augment
from inkfuse.diffusion import Condition, Denoiser, Schedule
from inkfuse.diffusion.latent import LatentSpace
from inkfuse.diffusion.upsampling import shrink, training_levels, with_low_res
from inkfuse.errors import ConfigError, TrainingError
from inkfuse.nn import build_model
from inkfuse.text.conditioner import TextConditioner, is_pretrained
from inkfuse.train import loop, scoring
from inkfuse.train.clip import ClipKind
from inkfuse.train.clip import trim as trim_padding
from inkfuse.train.loop import Dist, Kind
from inkfuse.train.textlm import TextLMKind
from inkfuse.viz import save_grid


class DiffusionKind(Kind):
    label = "training"
    sections = ("data", "model", "diffusion")

    def setup(self) -> None:
        config, device, d = self.config, self.device, self.dist
        data = build_dataset(config.data, seed=config.train.seed)
        check_fits_data(config, data)  # what the images decide, before RUN/clip or RUN/vae
        text = prepare_text(config, self.run_dir, data, device, d, self.progress)
        latent = prepare_latents(config, self.run_dir, device, d)
        self.use(resolve(config, data, text, latent), data, text, latent)

    def use(self, config: Config, data: ImageDataset, text: TextConditioner | None,
            latent: LatentSpace | None) -> None:
        """Train the resolved recipe `config` on `data` with these frozen parts: what the steps
        read, prepared once (a fine-tune comes here with its subject's images)."""
        device = self.device
        self.config, self.text, self.latent = config, text, latent
        self.meta, self.size = dataset_meta(data, config), len(data)
        self.data = data.to(device)
        self.conditions = condition_source(config, self.data, text, device)
        if latent is not None:  # encode once; each step draws z from the posterior
            self.z_mean, self.z_std = latent.encode_dataset(self.data.images)
        self.schedule = Schedule.of(config.diffusion)
        self.null = text.empty_prompt() if text is not None else None  # dropped rows
        self.memory = (torch.channels_last if config.train.channels_last
                       else torch.contiguous_format)

    def make_model(self) -> nn.Module:
        c = self.config
        net = build_model(c.model, c.data.size, c.diffusion.timesteps).to(self.device)
        # what the progress grids sample from: the EMA weights, in the layout load_run gives
        sampler = copy.deepcopy(net).eval().requires_grad_(False)
        self.run = Run.from_parts(c, sampler, self.schedule, self.run_dir, self.meta, self.text,
                                  self.latent)
        return net.to(memory_format=self.memory)

    def batch(self, idx: Tensor, gen: torch.Generator) -> tuple[Tensor, Condition | None]:
        c, i = self.config, idx.to(self.device)
        if self.latent is not None:
            x0 = self.z_mean[i] + self.z_std[i] * torch.randn(self.z_mean[i].shape, generator=gen,
                                                              device=self.device)
        else:
            x0 = augment(self.data.to_float(i), hflip=c.data.hflip,
                         crop_padding=c.data.crop_padding, generator=gen)
        x0 = x0.contiguous(memory_format=self.memory)  # [B, C, H, W]
        cond = self.conditions(i, gen)
        if cond is not None:
            cond = cond.dropped(c.diffusion.cond_drop_prob, gen)
        if c.data.low_res:  # super-resolution: the shrunk image is the condition
            level = training_levels(len(x0), c.diffusion.low_res_noise, self.schedule, gen,
                                    self.device)
            cond = with_low_res(cond, shrink(x0, c.data.low_res), c.data.size, level,
                                self.schedule, gen)
        return x0, cond

    def loss(self, forward: nn.Module, batch: tuple[Tensor, Condition | None],
             gen: torch.Generator) -> tuple[Tensor, dict[str, float]]:
        x0, cond = batch
        dc = self.config.diffusion
        denoiser = Denoiser(forward, self.schedule, dc.target, null=self.null,
                            learn_variance=dc.learn_variance, vlb_weight=dc.vlb_weight,
                            discrete=not self.config.data.vae)
        return denoiser.loss(x0, cond, weighting=dc.loss_weighting, gamma=dc.min_snr_gamma,
                             generator=gen), {}

    def saved_config(self, state: dict[str, Any] | None) -> dict[str, Any]:
        saved = self.run_dir / "config.json"  # also there before the first checkpoint
        return checkpoint.read_json(saved) if saved.is_file() else {}

    def begin(self) -> None:
        checkpoint.write_json(self.run_dir / "config.json",
                              {**self.config.to_dict(), "dataset": self.meta})

    def load_sampler(self, weights: dict[str, Tensor]) -> None:
        """Put the trained model's (EMA) `weights` into the network the grids sample from."""
        self.run.net.load_state_dict(weights)

    def on_checkpoint(self, step: int, weights: dict[str, Tensor]) -> None:
        """The sample grid of this step, from the EMA weights in memory."""
        self.load_sampler(weights)
        s, low_res = self.config.sample, self.config.data.low_res
        real = self.data.to_float(slice(0, 64 * s.per_class)) if low_res else None
        images, labels = pipelines.sample_grid(self.run, per_class=s.per_class, progress=False,
                                               real=real)
        (self.run_dir / "samples").mkdir(exist_ok=True)
        save_grid(images, self.run_dir / "samples" / f"step-{step:07d}.png", nrow=s.per_class,
                  labels=labels)

    def eval_metrics(self) -> list[str]:
        metrics = scoring.metrics_for(self.config)
        scoring.check_metrics(metrics)
        return metrics

    def score(self, step: int, weights: dict[str, Tensor], metrics: list[str]
              ) -> dict[str, float | None]:
        """`metrics` of train.eval_n samples of the EMA weights in memory."""
        self.load_sampler(weights)
        return scoring.score(self.run, metrics, self.config.train.eval_n,
                             scoring.eval_seed(self.config))


def check_fits_data(config: Config, data: ImageDataset, text: TextConditioner | None = None,
                    latent: LatentSpace | None = None) -> None:
    """Refuse, in one line naming the key, a recipe value that the data contradicts: set by
    hand, it would otherwise fail at step 1 as a shape error (or, for class counts, an index
    error that reads like damaged labels). 0 means "from the data" and always fits. The text
    encoder's and the VAE's widths are checked once they are given (None: not loaded yet)."""
    m, d = config.model, config.data

    def refuse(key: str, value: int, fact: str) -> None:
        raise ConfigError(f"model.{key} = {value} but {fact}; leave it at 0 to follow the data")

    if not d.vae:
        if m.in_channels and m.in_channels != data.channels:
            refuse("in_channels", m.in_channels, f"the images have {data.channels} channels")
        if m.size and m.size != d.size:
            refuse("size", m.size, f"pixel diffusion denoises the data.size = {d.size} images "
                                   "(model.size is the latent side, with data.vae)")
    elif latent is not None:
        channels, side, _ = latent.shape(d.size)
        if m.in_channels and m.in_channels != channels:
            refuse("in_channels", m.in_channels, f"the VAE's latents have {channels} channels")
        if m.size and m.size != side:
            refuse("size", m.size, f"the VAE's latents of data.size = {d.size} images are "
                                   f"{side} x {side}")
    if m.low_res_channels and not d.low_res:
        refuse("low_res_channels", m.low_res_channels, "data.low_res = 0 gives no low-res input")
    if m.low_res_channels and m.low_res_channels != data.channels:
        refuse("low_res_channels", m.low_res_channels,
               f"the low-res images have {data.channels} channels")
    if d.labels in ("text", "clip-image"):
        if text is not None and m.cond_dim and m.cond_dim != text.pooled_dim:
            refuse("cond_dim", m.cond_dim, f"the text encoder's embedding is {text.pooled_dim} "
                                           "wide")
        if text is not None and m.token_dim and m.token_dim != text.token_dim:
            refuse("token_dim", m.token_dim, f"the text encoder's token features are "
                                             f"{text.token_dim} wide")
        return
    if m.token_dim:
        refuse("token_dim", m.token_dim, f"data.labels = {d.labels!r} gives no text tokens to "
                                         "cross-attend to")
    if not m.cond_dim:
        return
    if d.labels == "context" and data.context is not None:
        if m.cond_dim != data.context.shape[1]:
            refuse("cond_dim", m.cond_dim, f"the context vectors have {data.context.shape[1]} "
                                           "entries")
    elif d.labels == "class" and data.labels is not None:
        if m.cond_dim < len(data.class_names):
            refuse("cond_dim", m.cond_dim, f"the data has {len(data.class_names)} classes "
                                           "(one-hot needs at least that many)")
    else:
        refuse("cond_dim", m.cond_dim, f"data.labels = {d.labels!r} gives the images nothing "
                                       "to condition on")


def resolve(config: Config, data: ImageDataset, text: TextConditioner | None = None,
            latent: LatentSpace | None = None) -> Config:
    """Fill in what the data (and the text encoder, and the VAE) decide: input channels and
    size, condition widths; a value set by hand that contradicts them is refused."""
    check_fits_data(config, data, text, latent)
    cond_dim, token_dim, null = 0, 0, "learned"
    if text is not None:
        cond_dim, token_dim, null = text.pooled_dim, text.token_dim, "empty-prompt"
    elif config.data.labels == "class" and data.labels is not None:
        cond_dim = len(data.class_names)
    elif config.data.labels == "context" and data.context is not None:
        cond_dim = data.context.shape[1]
    channels, size = data.channels, 0
    if latent is not None:
        channels, size, _ = latent.shape(config.data.size)
    return replace(config, model={
        "in_channels": config.model.in_channels or channels,
        # 0 (= in_channels) unless the variance is learned: run dirs from before keep matching
        "out_channels": config.model.out_channels or (
            2 * (config.model.in_channels or channels) if config.diffusion.learn_variance
            else 0),
        "size": config.model.size or size,
        "cond_dim": config.model.cond_dim or cond_dim,
        "token_dim": config.model.token_dim or token_dim,
        "low_res_channels": config.model.low_res_channels or (
            data.channels if config.data.low_res else 0),
        "null_condition": null,
    })


Conditions = Callable[[Tensor, torch.Generator], Condition | None]


def condition_source(config: Config, data: ImageDataset, text: TextConditioner | None,
                     device: torch.device) -> Conditions:
    """`draw(idx, gen)`: the condition of images `idx` (before the CFG drop).

    Captions go through `caption_source`. CLIP image embeddings (the course's trick) are
    computed once for the whole dataset."""
    labels = config.data.labels
    if labels == "text":
        return caption_source(data, text, device)
    if labels == "clip-image":
        embeddings = text.encode_images(data.images).to(device)
        return lambda idx, gen: Condition.from_vectors(embeddings[idx])
    if not config.model.cond_dim:
        return lambda idx, gen: None
    if data.context is not None:
        return lambda idx, gen: Condition.from_vectors(data.context[idx])
    return lambda idx, gen: Condition.from_labels(data.labels[idx], config.model.cond_dim)


def caption_source(data: ImageDataset, text: TextConditioner, device: torch.device,
                   trim: bool = False) -> Conditions:
    """`draw(idx, gen)`: the text condition of the captions of images `idx` (indices on
    `device`). Captions are tokenized once; each step encodes its batch with the frozen text
    model, drawing one of each image's caption variants when the data has them (a text U-Net's
    condition, and the diffusion prior's input). `trim` cuts the padding no caption of the batch
    reaches before encoding (`train.clip.trim`: the text tower masks padding, so the real
    tokens' features are the same, for a third of the work on shapes captions); the text
    U-Nets keep the full context length they were trained with."""
    variants = data.caption_variants
    texts = variants.texts if variants else [[c] for c in data.captions]
    probs = (variants.probs if variants else torch.ones(1)).to(device)
    flat = [c for options in texts for c in options]
    ids, mask = (t.view(len(texts), len(texts[0]), -1).to(device) for t in text.tokenize(flat))

    def draw_text(idx: Tensor, gen: torch.Generator) -> Condition:
        v = torch.multinomial(probs, len(idx), replacement=True, generator=gen)
        batch = (ids[idx, v], mask[idx, v])
        return text.encode_ids(*(trim_padding(*batch) if trim else batch))

    return draw_text


def prepare_text(config: Config, run_dir: Path, data: ImageDataset, device: torch.device,
                 d: Dist, progress: bool) -> TextConditioner | None:
    """The frozen text encoder of a text (or CLIP-image) conditioned run, kept in RUN/clip.

    `text.encoder` names a CLIP or text-LM run dir (copied into RUN/clip so the run stays
    whole) or an open_clip model (used in place); empty trains one on the run's own captions
    first: a CLIP or a masked LM (`text.kind`)."""
    if config.data.labels not in ("text", "clip-image"):
        return None
    if data.captions is None:
        raise TrainingError(f"data.labels = {config.data.labels!r} needs captions: use the "
                            "shapes dataset or a folder with captions.csv")
    spec, home = config.text.encoder, run_dir / "clip"
    if config.data.labels == "clip-image" and spec and is_textlm_dir(spec):
        raise TrainingError(f"text.encoder = {spec!r} is a text LM, which embeds no images; "
                            "data.labels = 'clip-image' needs a CLIP")
    have = (home / "clip.json").is_file() or is_textlm_dir(home)
    if not is_pretrained(spec) and d.main and not have:
        if spec:
            copy_clip(spec, home)
        else:
            recipe, kind = text_recipe(config)
            loop.run(recipe, home, kind, progress=progress, solo=True)
    if d.world > 1:
        dist.barrier()
    return load_conditioner(spec if is_pretrained(spec) else home, config.text.conditioning,
                            device)


def prepare_latents(config: Config, run_dir: Path, device: torch.device, d: Dist
                    ) -> LatentSpace | None:
    """The frozen VAE of a latent diffusion run, copied into RUN/vae."""
    if not config.data.vae:
        return None
    if d.main and not (run_dir / "vae" / "vae.json").is_file():
        copy_vae(config.data.vae, run_dir / "vae")
    if d.world > 1:
        dist.barrier()
    return load_latent_space(run_dir / "vae", device)


def dataset_meta(data: ImageDataset, config: Config) -> dict:
    prompts = config.sample.prompts
    if not prompts and config.data.labels in ("text", "clip-image"):
        prompts = list(dict.fromkeys(data.captions))[:8]  # distinct, in data order
    return {"name": data.name, "size": data.size, "channels": data.channels,
            "class_names": data.class_names, "context_names": data.context_names,
            "prompts": prompts}


def text_recipe(config: Config) -> tuple[ClipConfig | TextLMConfig, type[Kind]]:
    """The text encoder a text run trains into RUN/clip when `text.encoder` is empty, with its
    training kind: the built-in clip-shapes recipe (its own 20k pairs; `text.hard_negatives`
    makes it NegCLIP) or textlm-shapes (the same 20k scenes' captions), at the run's image size,
    objects per image, seed and device, for `text.clip_steps` steps."""
    dc = config.data
    if dc.name != "shapes":
        raise TrainingError("only shapes captions can train a text encoder on the fly; train one "
                            "with `inkfuse clip train` on a folder recipe and set text.encoder")
    data = {"size": dc.size, "max_objects": dc.max_objects, "withhold": list(dc.withhold)}
    train = {"steps": config.text.clip_steps, "seed": config.train.seed,
             "device": config.train.device}
    if config.text.kind == "lm":
        return replace(TextLMConfig(), data=data, train=train), TextLMKind
    return replace(ClipConfig(), data=data, clip={"hard_negatives": config.text.hard_negatives},
                   train=train), ClipKind
