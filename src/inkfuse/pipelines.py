"""Glue from a run dir to images: load the trained network, build its denoiser, guide it, and
hand it to a sampler. Re-implements no sampler math.

    run = load_run("runs/shapes")
    images = sample(run, 16, labels=torch.arange(16) % 4, guidance=3.0, steps=50)
    images = sample(load_run("runs/text"), 8, prompts=["a red circle in the top left"])
    images = sample(text_run, 8, prompts=["a red circle :0.7 | a blue square :0.3"])  # a mix
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor, nn
from tqdm import tqdm

from inkfuse import config as config_mod
from inkfuse.clip.conditioner import TextConditioner, is_pretrained, load_conditioner
from inkfuse.config import Config
from inkfuse.diffusion import SAMPLERS, Condition, Denoiser, Schedule, cfg
from inkfuse.diffusion.denoiser import Prediction
from inkfuse.diffusion.latent import LatentSpace, load_latent_space
from inkfuse.diffusion.samplers import SPACING
from inkfuse.diffusion.schedule import timestep_grid
from inkfuse.diffusion.upsampling import enlarge, shrink, with_low_res
from inkfuse.errors import CheckpointError, ConfigError, InkfuseError
from inkfuse.nn import build_model
from inkfuse.runtime import keep_freed_memory
from inkfuse.train import checkpoint


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
        precision) is bf16; the samplers' own arithmetic stays in float32."""
        bf16 = (precision or self.config.train.precision) == "bf16"
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=bf16)

    @property
    def conditional(self) -> bool:
        return self.config.model.cond_dim > 0 or self.config.model.token_dim > 0

    def denoiser(self, guidance: float = 1.0, rescale: float = 0.0,
                 weights: tuple[float, ...] = (1.0,)) -> Callable:
        # pixels live in [-1, 1], so x0 is clamped there; latents have no such bound
        clip = None if self.latent is not None else 1.0
        base = Denoiser(self.net, self.schedule, self.config.diffusion.target, clip)
        return cfg(base, guidance, rescale, weights) if self.conditional else base


def load_run(run_dir: str | Path, *, ema: bool = True, device: str | torch.device = "cpu",
             compile: bool = False) -> Run:
    """Load a run dir written by `train` (its config.json and latest checkpoint).

    `compile` wraps the network in `torch.compile`, after tens of seconds of compiling per
    batch shape. On the benchmark CPU the eager model is as fast (0.9–1.1×,
    benchmarks/README.md); it is there for GPUs, where small models are launch-bound
    (not yet measured with compile)."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise CheckpointError(f"run dir {run_dir} does not exist (train one with `inkfuse train`)")
    raw = checkpoint.read_json(run_dir / "config.json")
    if not isinstance(raw, dict):
        raise CheckpointError(f"{run_dir / 'config.json'} is not an inkfuse run config")
    meta = raw.pop("dataset", {})
    try:
        config = config_mod.from_dict(raw, source=str(run_dir / "config.json"))
    except ConfigError as e:
        raise CheckpointError(f"{run_dir} is not a run of this inkfuse version: {e}") from None
    schedule = Schedule(config.diffusion.schedule, config.diffusion.timesteps,
                        config.diffusion.beta_start, config.diffusion.beta_end)
    net = build_model(config.model, config.data.size, config.diffusion.timesteps)
    weights = checkpoint.load_weights(run_dir, "ema" if ema else "model")
    checkpoint.check_weights(weights, net.state_dict(), run_dir, "its config.json")
    net.load_state_dict(weights)
    net.to(device).eval()
    text = None
    if config.data.labels in ("text", "clip-image"):
        spec = config.text.encoder if is_pretrained(config.text.encoder) else run_dir / "clip"
        text = load_conditioner(spec, config.text.conditioning, device)
        net.set_null_text(*text.null())
    latent = load_latent_space(run_dir / "vae", device) if config.data.vae else None
    if compile:
        net = torch.compile(net)
    return Run(config, net, schedule, run_dir, meta.get("class_names", []),
               meta.get("context_names", []), text, latent, meta.get("prompts", []))


def parse_mix(prompt: str) -> tuple[list[str], tuple[float, ...]]:
    """"a red circle :0.7 | a blue square :0.3" -> (texts, weights summing to 1).

    Parts are separated by "|"; a trailing ":w" weights a part (default 1)."""
    texts, weights = [], []
    for part in prompt.split("|"):
        text, _, w = part.rpartition(":")
        try:
            weight = float(w) if text.strip() else 1.0
        except ValueError:
            text, weight = part, 1.0
        texts.append((text if text.strip() else part).strip())
        weights.append(weight)
    if len(texts) > 1 and (min(weights) < 0 or sum(weights) <= 0):
        raise ConfigError(f"the weights of {prompt!r} must be >= 0 and not all 0")
    total = sum(weights)
    return texts, tuple(w / total for w in weights)


def text_condition(run: Run, n: int, prompts: list[str]) -> tuple[Condition, tuple[float, ...]]:
    """The condition for `n` samples of prompts (1 or n of them), stacked as k blocks of n rows
    for a mix of k prompts, and the mix's weights."""
    if run.text is None:
        raise ConfigError(f"the model in {run.dir} is not text-conditioned: drop --prompt "
                          "(use --class or --context)")
    parsed = [parse_mix(p) for p in _per_sample_list(prompts, n)]
    if len({len(texts) for texts, _ in parsed}) > 1 or len({w for _, w in parsed}) > 1:
        raise ConfigError("every sample of one call must mix the same number of prompts with "
                          "the same weights; sample different mixes one at a time")
    unique = sorted({t for texts, _ in parsed for t in texts})
    encoded = run.text.encode(unique)
    blocks = [encoded[torch.tensor([unique.index(texts[j]) for texts, _ in parsed])]
              for j in range(len(parsed[0][0]))]
    return Condition.cat(blocks), parsed[0][1]


def _per_sample_list(values: list[str], n: int) -> list[str]:
    if len(values) == 1:
        return values * n
    if len(values) != n:
        raise ConfigError(f"--prompt gave {len(values)} prompts for {n} samples; give 1 or {n}")
    return values


def make_condition(run: Run, n: int, labels: Tensor | None = None,
                   context: Tensor | None = None, prompts: list[str] | None = None
                   ) -> tuple[Condition | None, tuple[float, ...]]:
    """The condition for `n` samples and the weights of its mix (see `text_condition`).

    Given labels, context vectors or prompts, else each class in turn for class models, and the
    null condition (the empty prompt) for text models."""
    if prompts is not None:
        return text_condition(run, n, prompts)
    dim = run.config.model.cond_dim
    if run.text is not None or not dim:
        if labels is not None or context is not None:
            what = "text-conditioned: use --prompt" if run.text else "unconditional"
            raise ConfigError(f"the model in {run.dir} is {what}; drop --class/--context")
        return None, (1.0,)
    if context is not None:
        context = torch.as_tensor(context, dtype=torch.float32)
        if context.shape[-1] != dim:
            names = ", ".join(run.context_names) or "its context entries"
            raise ConfigError(f"--context needs {dim} values for this model ({names}), "
                              f"got {context.shape[-1]}")
        return Condition.from_vectors(_per_sample(context.reshape(-1, dim), n, "--context")), (1.0,)
    if labels is None:
        labels = torch.arange(n) % dim
    labels = _per_sample(torch.as_tensor(labels).reshape(-1), n, "--class")
    return Condition.from_labels(labels, dim), (1.0,)


def _per_sample(values: Tensor, n: int, what: str) -> Tensor:
    """One row per sample: a single value is repeated, otherwise there must be exactly n."""
    if len(values) == 1:
        return values.expand(n, *values.shape[1:])
    if len(values) != n:
        raise ConfigError(f"{what} gave {len(values)} values for {n} samples; give 1 or {n}")
    return values


@torch.no_grad()
def sample(
    run: Run, n: int, *, labels: Tensor | None = None, context: Tensor | None = None,
    prompts: list[str] | None = None, low_res: Tensor | None = None, sampler: str = "ddim",
    steps: int = 50, eta: float = 0.0,
    guidance: float = 1.0, rescale: float = 0.0, spacing: str | None = None, seed: int = 0,
    noise: bool = True, churn: float = 0.0, precision: str | None = None, batch_size: int = 256,
    progress: bool = True,
    on_step: Callable[[int, Tensor, Prediction], None] | None = None,
) -> Tensor:
    """Draw `n` images in [-1, 1] as an [n, C, H, W] float tensor on the CPU.

    The seed fixes the starting noise and every fresh noise draw: same seed, same images.
    `prompts` (text models): 1 or n prompts; "a | b" mixes prompts (see `parse_mix`).
    `low_res` (super-resolution models): the n images to upsample, [n, C, h, w] in [-1, 1].
    A latent diffusion run samples latents and returns them decoded to images.
    `spacing` (leading, trailing, linspace, karras) defaults to the sampler's own (`SPACING`).
    `precision` (fp32 or bf16, default: the run's training precision) sets autocast for the
    network only; the sampler's own arithmetic stays in float32.
    `on_step(i, x, pred)` sees each intermediate batch (only sensible when n ≤ batch_size).
    """
    if sampler not in SAMPLERS:
        raise ConfigError(f"unknown sampler {sampler!r} (choose from {', '.join(SAMPLERS)})")
    if n < 1:
        raise ConfigError(f"--n must be at least 1, got {n}")
    keep_freed_memory()
    device = run.device
    cond, weights = make_condition(run, n, labels, context, prompts)
    low = _check_low_res(run, n, low_res)
    ts = timestep_grid(run.schedule, steps, spacing or SPACING[sampler]).to(device)
    denoiser = run.denoiser(guidance, rescale, weights)
    fn = SAMPLERS[sampler]
    accepted = inspect.signature(fn).parameters
    options = {k: v for k, v in {"eta": eta, "noise": noise, "churn": churn}.items()
               if k in accepted}
    gen = torch.Generator(device).manual_seed(seed)
    bar = tqdm(total=len(ts) * ((n + batch_size - 1) // batch_size), disable=not progress,
               unit="step", desc=f"{sampler} {steps} steps", dynamic_ncols=True)

    def step_hook(i: int, x: Tensor, pred: Prediction) -> None:
        bar.update(1)
        if on_step is not None:  # the user sees images, decoded from latents if need be
            on_step(i, x if run.latent is None else run.latent.decode(x.float()), pred)

    out = []
    for lo in range(0, n, batch_size):
        hi = min(n, lo + batch_size)
        x = torch.randn((hi - lo, *run.shape), generator=gen, device=device)
        c = None if cond is None else Condition.cat(
            [cond[j * n + lo:j * n + hi] for j in range(len(weights))]).to(device)
        if low is not None:  # the same noised low-res image for every part of a mix
            level = torch.full((hi - lo,), round(run.config.sample.low_res_noise
                                                 * (run.schedule.T - 1)), device=device)
            hint = with_low_res(None, low[lo:hi].to(device), run.shape[1], level, run.schedule,
                                gen)
            k = len(weights)
            c = dataclasses.replace(c if c is not None else hint, low_res=hint.low_res.repeat(
                k, 1, 1, 1), low_res_t=level.repeat(k))
        with run.autocast(precision):
            x = fn(denoiser, x, ts, c, generator=gen, on_step=step_hook, **options)
        if run.latent is not None:
            x = run.latent.decode(x.float())
        out.append(x.cpu())
    bar.close()
    return torch.cat(out).clamp(-1, 1)


def _check_low_res(run: Run, n: int, low_res: Tensor | None) -> Tensor | None:
    """The images a super-resolution run upsamples, at its low-res size, or None."""
    size = run.config.data.low_res
    if not size:
        if low_res is not None:
            raise ConfigError(f"the model in {run.dir} is not a super-resolution model: "
                              "it takes no low-res images")
        return None
    if low_res is None:
        raise ConfigError(f"the model in {run.dir} upsamples {size}x{size} images: give them "
                          "(inkfuse sample BASE_RUN --upsample THIS_RUN)")
    low = torch.as_tensor(low_res, dtype=torch.float32)
    if low.ndim != 4 or low.shape[0] != n or low.shape[1] != run.shape[0]:
        raise ConfigError(f"low-res images must be [{n}, {run.shape[0]}, h, w], "
                          f"got {list(low.shape)}")
    if low.shape[-1] != size:
        low = shrink(low, size) if low.shape[-1] > size else enlarge(low, size)
    return low


def upsample(sr_run: Run, images: Tensor, *, labels: Tensor | None = None,
             prompts: list[str] | None = None, seed: int = 0, progress: bool = True,
             **kwargs) -> Tensor:
    """The second stage of a cascade: `images` (e.g. a base run's samples) drawn again at the
    super-resolution run's size, with its recipe's sampler, conditioned like the base."""
    s = sr_run.config.sample
    options = dict(sampler=s.sampler, steps=s.steps, eta=s.eta, guidance=s.guidance,
                   rescale=s.guidance_rescale) | kwargs
    if sr_run.text is None:
        prompts = None
    if not sr_run.config.model.cond_dim or sr_run.text is not None:
        labels = None
    return sample(sr_run, len(images), labels=labels, prompts=prompts, low_res=images,
                  seed=seed, progress=progress, **options)


def sample_grid(run: Run, per_class: int = 8, *, progress: bool = True,
                real: Tensor | None = None, **kwargs) -> tuple[Tensor, list[str] | None]:
    """One row per class, context entry or prompt for conditional models, else an 8-wide grid.

    Uses the recipe's [sample] settings unless overridden in kwargs; text models draw the
    recipe's `sample.prompts`, or else 8 of their training captions. A super-resolution run
    upsamples shrunk copies of `real` images ([N, C, H, W] in [-1, 1]).
    """
    s = run.config.sample
    options = dict(sampler=s.sampler, steps=s.steps, eta=s.eta, guidance=s.guidance,
                   rescale=s.guidance_rescale, progress=progress) | kwargs
    dim = run.config.model.cond_dim
    rows = torch.arange(dim).repeat_interleave(per_class)
    if run.text is not None:
        cond, names = {"prompts": [p for p in run.prompts for _ in range(per_class)]}, run.prompts
    elif not dim:
        cond, names = {}, None
    elif run.config.data.labels == "context":
        cond = {"context": torch.eye(dim)[rows]}
        names = run.context_names or [str(i) for i in range(dim)]
    else:
        cond, names = {"labels": rows}, run.class_names or [str(i) for i in range(dim)]
    n = len(next(iter(cond.values()))) if cond else 8 * per_class
    if run.config.data.low_res:
        if real is None or len(real) < n:
            raise ConfigError(f"a super-resolution grid needs {n} real images to shrink")
        cond["low_res"] = shrink(real[:n].float(), run.config.data.low_res)
    return sample(run, n, **cond, **options), names


__all__ = ["InkfuseError", "Run", "load_run", "make_condition", "sample", "sample_grid",
           "upsample"]
