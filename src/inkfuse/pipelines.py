"""Glue from a run dir to images: build the run's denoiser, guide it, and hand it to a sampler.
Re-implements no sampler math; `draw` is the one set-up (generator, batches, autocast, progress,
decoding) that `sample` and the editing functions share.

    run = load_run("runs/shapes")
    images = sample(run, 16, labels=torch.arange(16) % 4, guidance=3.0, steps=50)
    images = sample(load_run("runs/text"), 8, prompts=["a red circle in the top left"])
    images = sample(text_run, 8, prompts=["a red circle :0.7 | a blue square :0.3"])  # a mix
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

import torch
from torch import Tensor
from tqdm import tqdm

from inkfuse.artifacts.run import Run, load_run
from inkfuse.diffusion import Condition, Prediction
from inkfuse.diffusion.samplers import get_sampler
from inkfuse.diffusion.samplers.walk import DenoiserFn, OnStep
from inkfuse.diffusion.schedule import timestep_grid
from inkfuse.diffusion.upsampling import enlarge, shrink, with_low_res
from inkfuse.errors import CheckpointError, ConfigError, InkfuseError
from inkfuse.runtime import keep_freed_memory


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
        if not math.isfinite(weight):
            raise ConfigError(f"the weight of {part.strip()!r} in {prompt!r} must be a finite "
                              "number, e.g. 'a red circle :0.7 | a blue square :0.3'")
        weights.append(weight)
    if len(texts) > 1 and (min(weights) < 0 or sum(weights) <= 0):
        raise ConfigError(f"the weights of {prompt!r} must be >= 0 and not all 0")
    total = sum(weights)
    if not math.isfinite(total):
        raise ConfigError(f"the weights of {prompt!r} are too large: use weights like 0.7, 0.3")
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


# walk(denoiser, x, grid, cond, *, generator, on_step) -> x: a sampler with its options bound
# (`Sampler.bind`), or `repaint` with its known region.
Walk = Callable[..., Tensor]
# prepare(generator, lo, hi) -> (starting x, condition) of samples lo..hi-1, drawn in turn
Prepare = Callable[[torch.Generator, int, int], "tuple[Tensor, Condition | None]"]


@torch.no_grad()
def draw(
    run: Run, walk: Walk, denoiser: DenoiserFn, grid: Tensor, n: int, prepare: Prepare, *,
    seed: int = 0, precision: str | None = None, batch_size: int | None = None,
    progress: bool = True, desc: str = "", calls: int | None = None,
    on_step: OnStep | None = None,
) -> Tensor:
    """Run `walk` on `grid` for `n` samples in batches of `batch_size` (default: all at once).

    One generator, seeded with `seed`, draws everything in order (each batch's `prepare`, then
    its walk), so the same seed gives the same images. The network runs under the run's
    autocast (`precision`), a progress bar (on a terminal) counts `calls` (default len(grid))
    steps per batch, and latents are decoded to images. Returns [n, C, H, W] on the CPU, not
    clamped; non-finite images (NaN weights) are a CheckpointError, never written.
    `on_step(i, x, pred)` sees each intermediate batch, decoded like the result.
    """
    if batch_size is None:
        batch_size = n
    if batch_size < 1:
        raise ConfigError(f"--batch-size must be at least 1, got {batch_size}")
    gen = torch.Generator(run.device).manual_seed(seed)
    # the bar only on a terminal (tqdm's disable=None): in a log or a pipe it would be noise
    # around the one line an error prints
    bar = tqdm(total=(calls or len(grid)) * -(-n // batch_size), disable=None if progress else True,
               unit="step", desc=desc, dynamic_ncols=True)

    def step_hook(i: int, x: Tensor, pred: Prediction) -> None:
        bar.update(1)
        if on_step is not None:  # the user sees images, decoded from latents if need be
            on_step(i, _decode(run, x), pred)

    out = []
    try:
        for lo in range(0, n, batch_size):
            hi = min(n, lo + batch_size)
            x, cond = prepare(gen, lo, hi)
            with run.autocast(precision):
                x = walk(denoiser, x, grid, cond, generator=gen, on_step=step_hook)
            x = _decode(run, x)
            if not torch.isfinite(x).all():  # NaN weights or an overflow: never grey images
                raise CheckpointError(f"the model in {run.dir} produced NaN or infinite values "
                                      "and nothing was written; its weights are damaged or "
                                      "diverged: retrain, or resume from an earlier checkpoint")
            out.append(x.cpu())
    except BaseException:  # an error or Ctrl-C: clear the bar, so the message is the one line
        bar.leave = False
        bar.close()
        raise
    bar.close()
    return torch.cat(out)


def _decode(run: Run, x: Tensor) -> Tensor:
    return x if run.latent is None else run.latent.decode(x.float())


def recipe_options(run: Run, sampler: str) -> dict[str, object]:
    """The run's [sample] settings that are options of `sampler` (its `eta`, for ddim)."""
    s = run.config.sample
    return get_sampler(sampler).select({f.name: getattr(s, f.name)
                                        for f in dataclasses.fields(s)})


@torch.no_grad()
def sample(
    run: Run, n: int, *, labels: Tensor | None = None, context: Tensor | None = None,
    prompts: list[str] | None = None, low_res: Tensor | None = None, sampler: str = "ddim",
    steps: int = 50, guidance: float = 1.0, rescale: float = 0.0, spacing: str | None = None,
    seed: int = 0, precision: str | None = None, batch_size: int = 256, progress: bool = True,
    on_step: OnStep | None = None, thresholding: str | None = None,
    threshold_percentile: float | None = None, **options: object,
) -> Tensor:
    """Draw `n` images in [-1, 1] as an [n, C, H, W] float tensor on the CPU.

    The seed fixes the starting noise and every fresh noise draw: same seed, same images.
    `prompts` (text models): 1 or n prompts; "a | b" mixes prompts (see `parse_mix`).
    `low_res` (super-resolution models): the n images to upsample, [n, C, h, w] in [-1, 1].
    A latent diffusion run samples latents and returns them decoded to images.
    `spacing` (leading, trailing, linspace, karras) defaults to the sampler's own.
    `options` are the sampler's own (`SAMPLERS[sampler].options`: ddim's eta, ddpm's noise,
    euler's and heun's churn…), at the sampler's defaults unless given; one the sampler does
    not have is a ConfigError.
    `precision` (fp32 or bf16, default: the run's training precision) sets autocast for the
    network only; the sampler's own arithmetic stays in float32.
    `on_step(i, x, pred)` sees each intermediate batch (only sensible when n ≤ batch_size).
    `thresholding` (none, static, dynamic at `threshold_percentile`; default the recipe's) acts
    on the guided x̂0 of pixel models (Imagen's dynamic thresholding, `diffusion.thresholding`).
    """
    entry = get_sampler(sampler)
    walk = entry.bind(options)
    if n < 1:
        raise ConfigError(f"--n must be at least 1, got {n}")
    keep_freed_memory()
    device = run.device
    cond, weights = make_condition(run, n, labels, context, prompts)
    low = _check_low_res(run, n, low_res)
    grid = timestep_grid(run.schedule, steps, spacing or entry.spacing).to(device)

    def prepare(gen: torch.Generator, lo: int, hi: int) -> tuple[Tensor, Condition | None]:
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
        return x, c

    denoiser = run.denoiser(guidance, rescale, weights, thresholding, threshold_percentile)
    return draw(run, walk, denoiser, grid, n, prepare,
                seed=seed, precision=precision, batch_size=batch_size, progress=progress,
                desc=f"{sampler} {steps} steps", on_step=on_step).clamp(-1, 1)


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
    options = dict(sampler=s.sampler, steps=s.steps, guidance=s.guidance,
                   rescale=s.guidance_rescale) | kwargs
    options = recipe_options(sr_run, options["sampler"]) | options
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
    options = dict(sampler=s.sampler, steps=s.steps, guidance=s.guidance,
                   rescale=s.guidance_rescale, progress=progress) | kwargs
    options = recipe_options(run, options["sampler"]) | options
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


__all__ = ["InkfuseError", "Run", "draw", "load_run", "make_condition", "recipe_options",
           "sample", "sample_grid", "upsample"]


def class_labels(run: Run, n: int, labels: Tensor | None = None) -> Tensor | None:
    """The class ids `sample` conditions `n` samples of `run` on: `labels` (1 or n of them), or
    else each class in turn; None when the run is not conditioned on class ids.

    What a caller needs to label the images it was given back, or to condition the next stage
    of a cascade like this one."""
    dim = run.config.model.cond_dim
    if not dim or run.text is not None or run.config.data.labels != "class":
        return None
    if labels is None:
        return torch.arange(n) % dim
    return _per_sample(torch.as_tensor(labels).reshape(-1), n, "--class")


def sample_cascade(base: Run, sr_run: Run, n: int, *, labels: Tensor | None = None,
                   context: Tensor | None = None, prompts: list[str] | None = None,
                   seed: int = 0, progress: bool = True, **options: object) -> Tensor:
    """A cascade (Ho et al. 2021): `n` samples of `base`, drawn again at `sr_run`'s size and
    conditioned as they were drawn, on the same prompts or class ids (`class_labels`).

    `options` are `sample`'s for the base (sampler, steps, guidance, ...); the upsampler uses
    its own recipe's [sample] settings (see `upsample`). Both stages use `seed`."""
    images = sample(base, n, labels=labels, context=context, prompts=prompts, seed=seed,
                    progress=progress, **options)
    return upsample(sr_run, images, labels=class_labels(base, n, labels), prompts=prompts,
                    seed=seed, progress=progress)


__all__ += ["class_labels", "sample_cascade"]
