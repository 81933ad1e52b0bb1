"""Glue from a run dir to images: load the trained network, build its denoiser, guide it, and
hand it to a sampler. Re-implements no sampler math.

    run = load_run("runs/shapes")
    images = sample(run, 16, labels=torch.arange(16) % 4, guidance=3.0, steps=50)
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor, nn
from tqdm import tqdm

from inkfuse import config as config_mod
from inkfuse.config import Config
from inkfuse.diffusion import SAMPLERS, Condition, Denoiser, Schedule, cfg
from inkfuse.diffusion.denoiser import Prediction
from inkfuse.diffusion.samplers import SPACING
from inkfuse.diffusion.schedule import timestep_grid
from inkfuse.errors import CheckpointError, ConfigError, InkfuseError
from inkfuse.nn import build_model
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

    @property
    def device(self) -> torch.device:
        return next(self.net.parameters()).device

    @property
    def shape(self) -> tuple[int, int, int]:
        return (self.config.model.in_channels, self.config.data.size, self.config.data.size)

    @property
    def conditional(self) -> bool:
        return self.config.model.cond_dim > 0

    def autocast(self, precision: str | None = None) -> torch.autocast:
        """bf16 autocast for the network when `precision` (default: the run's training
        precision) is bf16; the samplers' own arithmetic stays in float32."""
        bf16 = (precision or self.config.train.precision) == "bf16"
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=bf16)

    def denoiser(self, guidance: float = 1.0, rescale: float = 0.0) -> Callable:
        base = Denoiser(self.net, self.schedule, self.config.diffusion.target)
        return cfg(base, guidance, rescale) if self.conditional else base


def load_run(run_dir: str | Path, *, ema: bool = True, device: str | torch.device = "cpu") -> Run:
    """Load a run dir written by `train` (its config.json and latest checkpoint)."""
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
    try:
        net.load_state_dict(weights)
    except RuntimeError as e:
        raise CheckpointError(f"the checkpoint in {run_dir} does not match its config.json "
                              f"({str(e).splitlines()[0]}...)") from None
    net.to(device).eval()
    return Run(config, net, schedule, run_dir, meta.get("class_names", []),
               meta.get("context_names", []))


def make_condition(run: Run, n: int, labels: Tensor | None = None,
                   context: Tensor | None = None) -> Condition | None:
    """The condition for `n` samples: given labels or context vectors, else each class in turn."""
    dim = run.config.model.cond_dim
    if not dim:
        if labels is not None or context is not None:
            raise ConfigError(f"the model in {run.dir} is unconditional: drop --class/--context")
        return None
    if context is not None:
        context = torch.as_tensor(context, dtype=torch.float32)
        if context.shape[-1] != dim:
            names = ", ".join(run.context_names) or "its context entries"
            raise ConfigError(f"--context needs {dim} values for this model ({names}), "
                              f"got {context.shape[-1]}")
        return Condition.from_vectors(_per_sample(context.reshape(-1, dim), n, "--context"))
    if labels is None:
        labels = torch.arange(n) % dim
    labels = _per_sample(torch.as_tensor(labels).reshape(-1), n, "--class")
    return Condition.from_labels(labels, dim)


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
    sampler: str = "ddim", steps: int = 50, eta: float = 0.0, guidance: float = 1.0,
    rescale: float = 0.0, spacing: str | None = None, seed: int = 0, noise: bool = True,
    churn: float = 0.0, precision: str | None = None, batch_size: int = 256,
    progress: bool = True,
    on_step: Callable[[int, Tensor, Prediction], None] | None = None,
) -> Tensor:
    """Draw `n` images in [-1, 1] as an [n, C, H, W] float tensor on the CPU.

    The seed fixes the starting noise and every fresh noise draw: same seed, same images.
    `spacing` (leading, trailing, linspace, karras) defaults to the sampler's own (`SPACING`).
    `precision` (fp32 or bf16, default: the run's training precision) sets autocast for the
    network only; the sampler's own arithmetic stays in float32.
    `on_step(i, x, pred)` sees each intermediate batch (only sensible when n ≤ batch_size).
    """
    if sampler not in SAMPLERS:
        raise ConfigError(f"unknown sampler {sampler!r} (choose from {', '.join(SAMPLERS)})")
    if n < 1:
        raise ConfigError(f"--n must be at least 1, got {n}")
    device = run.device
    cond = make_condition(run, n, labels, context)
    ts = timestep_grid(run.schedule, steps, spacing or SPACING[sampler]).to(device)
    denoiser = run.denoiser(guidance, rescale)
    fn = SAMPLERS[sampler]
    accepted = inspect.signature(fn).parameters
    options = {k: v for k, v in {"eta": eta, "noise": noise, "churn": churn}.items()
               if k in accepted}
    gen = torch.Generator(device).manual_seed(seed)
    bar = tqdm(total=len(ts) * ((n + batch_size - 1) // batch_size), disable=not progress,
               unit="step", desc=f"{sampler} {steps} steps", dynamic_ncols=True)

    def step_hook(i: int, x: Tensor, pred: Prediction) -> None:
        bar.update(1)
        if on_step is not None:
            on_step(i, x, pred)

    out = []
    for lo in range(0, n, batch_size):
        hi = min(n, lo + batch_size)
        x = torch.randn((hi - lo, *run.shape), generator=gen, device=device)
        c = None if cond is None else cond[lo:hi].to(device)
        with run.autocast(precision):
            out.append(fn(denoiser, x, ts, c, generator=gen, on_step=step_hook, **options).cpu())
    bar.close()
    return torch.cat(out).clamp(-1, 1)


def sample_grid(run: Run, per_class: int = 8, *, progress: bool = True,
                **kwargs) -> tuple[Tensor, list[str] | None]:
    """One row per class (or context entry) for conditional models, else an 8-wide grid.

    Uses the recipe's [sample] settings unless overridden in kwargs.
    """
    s = run.config.sample
    options = dict(sampler=s.sampler, steps=s.steps, eta=s.eta, guidance=s.guidance,
                   rescale=s.guidance_rescale, progress=progress) | kwargs
    dim = run.config.model.cond_dim
    if not dim:
        return sample(run, 8 * per_class, **options), None
    rows = torch.arange(dim).repeat_interleave(per_class)
    if run.config.data.labels == "context":
        images = sample(run, len(rows), context=torch.eye(dim)[rows], **options)
        return images, run.context_names or [str(i) for i in range(dim)]
    images = sample(run, len(rows), labels=rows, **options)
    return images, run.class_names or [str(i) for i in range(dim)]


__all__ = ["InkfuseError", "Run", "load_run", "make_condition", "sample", "sample_grid"]
