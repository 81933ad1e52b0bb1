"""A diffusion run dir as something to sample from: its config.json, the latest checkpoint's
(EMA) weights checked against the config, and the frozen parts it depends on (`clip/`, `vae/`).
A LoRA fine-tune (`artifacts.finetune`) is its base run with the adapters merged into the
weights, so it samples exactly as fast as the base.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from inkfuse.artifacts import checkpoint
from inkfuse.artifacts import finetune as finetuned
from inkfuse.artifacts.clip import load_conditioner
from inkfuse.artifacts.prior import Prior, load_prior
from inkfuse.artifacts.tokens import TOKENS
from inkfuse.artifacts.vae import load_latent_space
from inkfuse.config import Config, FinetuneConfig
from inkfuse.diffusion import Condition, Denoiser, Schedule, cfg, threshold
from inkfuse.diffusion.latent import LatentSpace
from inkfuse.errors import CheckpointError, ConfigError
from inkfuse.nn import build_model
from inkfuse.nn.lora import Adapted
from inkfuse.runtime import resolve_precision
from inkfuse.text.conditioner import TextConditioner, is_pretrained


@dataclass
class Run:
    """A trained model ready to sample: config, network (EMA weights by default), schedule."""

    config: Config
    net: nn.Module
    schedule: Schedule
    dir: Path
    class_names: list[str] = field(default_factory=list)
    context_names: list[str] = field(default_factory=list)
    text: TextConditioner | None = None  # the frozen CLIP of a text-conditioned run
    latent: LatentSpace | None = None  # the frozen VAE of a latent diffusion run
    prompts: list[str] = field(default_factory=list)  # training captions for sample grids
    null: Condition | None = None  # the empty prompt's encoding: what a dropped text row reads
    prior: Prior | None = None  # unCLIP: text -> CLIP image embedding, for a clip-image decoder

    @classmethod
    def from_parts(cls, config: Config, net: nn.Module, schedule: Schedule, run_dir: Path,
                   meta: dict, text: TextConditioner | None = None,
                   latent: LatentSpace | None = None) -> Run:
        """A Run of parts already in memory (`meta`: config.json's "dataset" entry), with the
        null condition the config asks for. Training draws its progress grids from one built
        around its EMA weights instead of reloading the run dir at every checkpoint."""
        null = None
        if text is not None and config.model.null_condition == "empty-prompt":
            null = text.empty_prompt()
        return cls(config, net, schedule, run_dir, meta.get("class_names", []),
                   meta.get("context_names", []), text, latent, meta.get("prompts", []), null)

    @property
    def device(self) -> torch.device:
        return next(self.net.parameters()).device

    @property
    def shape(self) -> tuple[int, int, int]:
        """What the sampler draws: images, or latents for a latent diffusion run."""
        side = self.config.model.size or self.config.data.size
        return (self.config.model.in_channels, side, side)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """What `sample` returns: [C, H, W] of the images."""
        if self.latent is None:
            return self.shape
        channels = self.latent.vae.cfg.in_channels
        return (channels, self.config.data.size, self.config.data.size)

    def autocast(self, precision: str | None = None) -> torch.autocast:
        """bf16 autocast for the network when `precision` (default: the run's training
        precision; `auto` decides on the machine that samples) is bf16; the samplers' own
        arithmetic stays in float32."""
        wanted = precision or self.config.train.precision
        bf16 = resolve_precision(wanted, self.device.type) == "bf16"
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=bf16)

    @property
    def conditional(self) -> bool:
        return self.config.model.cond_dim > 0 or self.config.model.token_dim > 0

    def denoiser(self, guidance: float = 1.0, rescale: float = 0.0,
                 weights: tuple[float, ...] = (1.0,), thresholding: str | None = None,
                 percentile: float | None = None) -> Callable:
        """The run's denoiser, guided (when conditional) and then thresholded: `thresholding`
        (none, static, dynamic; default the recipe's) acts on the guided x̂0."""
        s = self.config.sample
        mode = s.thresholding if thresholding is None else thresholding
        if mode != "none" and self.latent is not None:
            raise ConfigError(f"--threshold {mode} is for pixel models; {self.dir} samples "
                              "latents, which have no [-1, 1] range: drop --threshold")
        # pixels live in [-1, 1], so x0 is clamped there; latents have no such bound
        clip = None if self.latent is not None else 1.0
        dc = self.config.diffusion
        base = Denoiser(self.net, self.schedule, dc.target, clip, self.null,
                        learn_variance=dc.learn_variance)
        guided = cfg(base, guidance, rescale, weights) if self.conditional else base
        return threshold(guided, self.schedule, mode,
                         s.threshold_percentile if percentile is None else percentile)


def load_run(run_dir: str | Path, *, ema: bool = True, device: str | torch.device = "cpu",
             compile: bool = False, trust: bool = False, prior: bool = True,
             tokens: bool = True) -> Run:
    """Load a run dir written by `train` (its config.json and latest checkpoint), with a text
    run's learned tokens (RUN/tokens, `artifacts.tokens`) unless `tokens` is False.

    `compile` wraps the network in `torch.compile`, which compiles once per batch shape: it is
    there for GPUs, where small models are launch-bound; on the CPU eager is as fast
    (benchmarks/README.md). `trust` is for a run conditioned on pretrained open_clip
    weights that could run code when loaded (TorchScript of unknown sha256). `prior` loads the
    diffusion prior of a CLIP-image run that has one (RUN/prior); False leaves it out."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise CheckpointError(f"run dir {run_dir} does not exist (train one with `inkfuse train`)")
    config, meta = read_config(run_dir)
    if isinstance(config, FinetuneConfig) and config.finetune.lora:
        return _adapted(run_dir, config, meta, ema=ema, device=device, compile=compile,
                        trust=trust, tokens=tokens)
    schedule = Schedule.of(config.diffusion)
    net = build_model(config.model, config.data.size, config.diffusion.timesteps)
    which = "ema" if ema else "model"
    weights = checkpoint.load_weights(run_dir, which)
    ckpt = checkpoint.find(run_dir) or run_dir
    checkpoint.check_weights(weights, net.state_dict(), ckpt / f"{which}.safetensors",
                             "its config.json", fix="restore the run dir from a copy or train "
                             "it again")
    net.load_state_dict(weights)
    net.to(device).eval()
    text = None
    if config.data.labels in ("text", "clip-image"):
        spec = config.text.encoder if is_pretrained(config.text.encoder) else run_dir / "clip"
        text = load_conditioner(spec, config.text.conditioning, device, trust=trust,
                                tokens=run_dir / TOKENS if tokens else None)
    latent = load_latent_space(run_dir / "vae", device) if config.data.vae else None
    if compile:
        net = torch.compile(net)
    run = Run.from_parts(config, net, schedule, run_dir, meta, text, latent)
    if prior and config.data.labels == "clip-image":
        run.prior = load_prior(run_dir, text, device)
    return run


def read_config(run_dir: Path) -> tuple[Config, dict]:
    """(recipe, its "dataset" entry) of a run dir's config.json: a diffusion recipe, or a
    fine-tune's (`FinetuneConfig`, a diffusion recipe with a [finetune] table)."""
    raw = checkpoint.read_json(run_dir / "config.json")  # its structure checked (schema.py)
    meta = raw.pop("dataset", {})
    recipe = FinetuneConfig if "finetune" in raw else Config
    try:
        return recipe.from_dict(raw, source=str(run_dir / "config.json")), meta
    except ConfigError as e:
        raise CheckpointError(f"{run_dir} is not a run of this inkfuse version: {e}") from None


def _adapted(run_dir: Path, config: FinetuneConfig, meta: dict, *, ema: bool,
             device: str | torch.device, compile: bool, trust: bool, tokens: bool) -> Run:
    """A LoRA fine-tune: the base run (its EMA weights, text encoder with its learned tokens,
    VAE), with the adapters of this run's checkpoint merged into its weights."""
    f = config.finetune
    base_path = finetuned.base_dir(run_dir, f.base)
    if not base_path.is_dir():
        raise CheckpointError(f"{run_dir} adapts the run {base_path}, which is not there; put "
                              "the base run back (the two move together) or fine-tune again")
    if finetuned.weights_digest(base_path) != f.base_weights:
        raise CheckpointError(f"the base run {base_path} has changed since the adapters of "
                              f"{run_dir} were trained on it (trained on, or its EMA replaced); "
                              "restore it from a copy or fine-tune again")
    base = load_run(base_path, device=device, trust=trust, tokens=tokens)
    adapted = Adapted(base.net, f.lora, f.lora_alpha)
    which = "ema" if ema else "model"
    weights = checkpoint.load_weights(run_dir, which)
    checkpoint.check_weights(weights, adapted.state_dict(),
                             (checkpoint.find(run_dir) or run_dir) / f"{which}.safetensors",
                             f"the rank-{f.lora} adapters its config.json describes",
                             fix="restore the run dir from a copy or fine-tune again")
    adapted.load_state_dict(weights)
    net = adapted.merge().eval()
    if compile:
        net = torch.compile(net)
    return Run.from_parts(config, net, base.schedule, run_dir, meta, base.text, base.latent)
