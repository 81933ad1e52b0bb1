"""Glue from a run dir to images: build the run's denoiser, guide it, and hand it to a sampler.
Re-implements no sampler math; `draw` is the one set-up (generator, batches, autocast, progress,
decoding) that `sample` and the editing functions share.

    run = load_run("runs/shapes")
    images = sample(run, 16, labels=torch.arange(16) % 4, guidance=3.0, steps=50)
    images = sample(load_run("runs/text"), 8, prompts=["a red circle in the top left"])
    images = sample(text_run, 8, prompts=["a red circle :0.7 | a blue square :0.3"])  # a mix
    images = sample(unclip_run, 8, prompts=["a red circle"])  # text -> prior -> decoder
    images = variations(unclip_run, image, 8)  # an image's CLIP embedding, decoded anew
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

import torch
from torch import Tensor
from tqdm import tqdm

from inkfuse.artifacts.prior import Prior
from inkfuse.artifacts.run import Run, load_run
from inkfuse.data.transforms import resize
from inkfuse.diffusion import Condition, Prediction
from inkfuse.diffusion.samplers import get_sampler
from inkfuse.diffusion.samplers.walk import DenoiserFn, OnStep
from inkfuse.diffusion.schedule import timestep_grid
from inkfuse.diffusion.upsampling import enlarge, shrink, with_low_res
from inkfuse.errors import CheckpointError, ConfigError, InkfuseError
from inkfuse.nn.prior import from_prior_space
from inkfuse.runtime import keep_freed_memory
from inkfuse.text.conditioner import TextConditioner


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


def text_condition(run: Run, n: int, prompts: list[str], text: TextConditioner | None = None
                   ) -> tuple[Condition, tuple[float, ...]]:
    """The condition for `n` samples of prompts (1 or n of them), stacked as k blocks of n rows
    for a mix of k prompts, and the mix's weights. `text` encodes them (default: the run's own
    conditioner; a prior reads them with `Prior.text`)."""
    if run.text is None:
        raise ConfigError(f"the model in {run.dir} is not text-conditioned: drop --prompt "
                          "(use --class or --context)")
    parsed = [parse_mix(p) for p in _per_sample_list(prompts, n)]
    if len({len(texts) for texts, _ in parsed}) > 1 or len({w for _, w in parsed}) > 1:
        raise ConfigError("every sample of one call must mix the same number of prompts with "
                          "the same weights; sample different mixes one at a time")
    unique = sorted({t for texts, _ in parsed for t in texts})
    encoded = (text or run.text).encode(unique)
    blocks = [encoded[torch.tensor([unique.index(texts[j]) for texts, _ in parsed])]
              for j in range(len(parsed[0][0]))]
    return Condition.cat(blocks), parsed[0][1]


def _per_sample_list(values: list[str], n: int) -> list[str]:
    if len(values) == 1:
        return values * n
    if len(values) != n:
        raise ConfigError(f"--prompt gave {len(values)} prompts for {n} samples; give 1 or {n}")
    return values


def image_condition(run: Run, n: int, embeddings: Tensor) -> Condition:
    """CLIP image embeddings (1 or n of them, [D] or [k, D]) as the condition of `n` samples of
    a clip-image decoder: what the prior makes of a prompt, or an image's own (`variations`)."""
    _check_clip_image(run)
    dim = run.config.model.cond_dim
    vectors = torch.as_tensor(embeddings, dtype=torch.float32)
    if vectors.ndim not in (1, 2) or vectors.shape[-1] != dim:
        raise ConfigError(f"image embeddings for {run.dir} must be [{dim}] or [k, {dim}], got "
                          f"{list(vectors.shape)}")
    return Condition.from_vectors(_per_sample(vectors.reshape(-1, dim), n, "image embeddings"))


def _check_clip_image(run: Run) -> None:
    if run.config.data.labels != "clip-image":
        raise ConfigError(f"the model in {run.dir} is conditioned on data.labels = "
                          f"{run.config.data.labels!r}, not on CLIP image embeddings: image "
                          "variations (and image embeddings) need a data.labels = 'clip-image' "
                          "run (recipes/shapes-unclip.toml)")


def make_condition(run: Run, n: int, labels: Tensor | None = None,
                   context: Tensor | None = None, prompts: list[str] | None = None,
                   embeddings: Tensor | None = None, text: TextConditioner | None = None
                   ) -> tuple[Condition | None, tuple[float, ...]]:
    """The condition for `n` samples and the weights of its mix (see `text_condition`, which
    `text` is passed to).

    Given labels, context vectors, prompts or CLIP image `embeddings` (1 or n, for a clip-image
    run), else each class in turn for class models, and the null condition (the empty prompt)
    for text models."""
    if embeddings is not None:
        if prompts is not None:
            raise ConfigError("give prompts or image embeddings, not both")
        return image_condition(run, n, embeddings), (1.0,)
    if prompts is not None:
        return text_condition(run, n, prompts, text)
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
def sample_prior(prior: Prior, cond: Condition, generator: torch.Generator, *,
                 steps: int | None = None, guidance: float | None = None) -> Tensor:
    """CLIP image embeddings [B, D], unit vectors, for the B prompts of `cond` (as `prior.text`
    encodes them): the prior's sampler walks from noise drawn from `generator`, with the
    `[prior]` steps and guidance it was trained with unless given."""
    s = prior.settings
    entry = get_sampler(s.sampler)
    steps = s.sample_steps if steps is None else steps
    if steps < 1:
        raise ConfigError(f"--prior-steps must be at least 1, got {steps}")
    device = cond.drop.device
    grid = timestep_grid(prior.schedule, steps, entry.spacing).to(device)
    x = torch.randn((len(cond), prior.net.cfg.embed_dim), generator=generator, device=device)
    denoiser = prior.denoiser(s.guidance if guidance is None else guidance)
    return from_prior_space(entry(denoiser, x, grid, cond, generator=generator))


def prior_of(run: Run, prompts: list[str] | None, use_prior: bool = True,
             steps: int | None = None, guidance: float | None = None) -> Prior | None:
    """The prior that turns `prompts` into image embeddings for `run`'s decoder, or None: the run
    has none, there are no prompts, or `use_prior` is False (the course's trick: the text
    embedding goes to the decoder as it is, which is also all a run without a prior does, so
    False is never refused). The prior's own `steps` or `guidance` with no prior to apply them
    to are refused."""
    prior = run.prior if use_prior and prompts is not None else None
    if prior is None and (steps is not None or guidance is not None):
        why = ("--no-prior turns it off" if run.prior is not None and not use_prior
               else "there are no prompts for it" if run.prior is not None
               else f"{run.dir} has none (train one with `inkfuse prior train {run.dir}`, for a "
                    "data.labels = 'clip-image' run)")
        raise ConfigError(f"--prior-steps and --prior-guidance set the diffusion prior, but "
                          f"{why}: drop them")
    return prior


def prior_embeddings(run: Run, prompts: list[str], *, seed: int = 0, steps: int | None = None,
                     guidance: float | None = None, precision: str | None = None) -> Tensor:
    """The CLIP image embeddings [len(prompts), D] that `run`'s prior draws for `prompts`, on the
    CPU (what `sample` gives the decoder; the seed fixes the prior's noise)."""
    prior = prior_of(run, prompts, True, steps, guidance)
    if prior is None:
        raise ConfigError(f"{run.dir} has no diffusion prior: train one with `inkfuse prior "
                          f"train {run.dir}` (data.labels = 'clip-image' runs)")
    gen = torch.Generator(run.device).manual_seed(seed)
    with run.autocast(precision):
        return sample_prior(prior, prior.text.encode(prompts), gen, steps=steps,
                            guidance=guidance).cpu()


@torch.no_grad()
def sample(
    run: Run, n: int, *, labels: Tensor | None = None, context: Tensor | None = None,
    prompts: list[str] | None = None, embeddings: Tensor | None = None,
    low_res: Tensor | None = None, sampler: str = "ddim",
    steps: int = 50, guidance: float = 1.0, rescale: float = 0.0, spacing: str | None = None,
    seed: int = 0, precision: str | None = None, batch_size: int = 256, progress: bool = True,
    on_step: OnStep | None = None, thresholding: str | None = None,
    threshold_percentile: float | None = None, use_prior: bool = True,
    prior_steps: int | None = None, prior_guidance: float | None = None, **options: object,
) -> Tensor:
    """Draw `n` images in [-1, 1] as an [n, C, H, W] float tensor on the CPU.

    The seed fixes the starting noise and every fresh noise draw: same seed, same images.
    `prompts` (text models): 1 or n prompts; "a | b" mixes prompts (see `parse_mix`).
    A clip-image run with a diffusion prior (unCLIP) draws each prompt's image embedding with
    the prior first (its `[prior]` steps and guidance, or `prior_steps`, `prior_guidance`),
    from the same seeded generator; `use_prior=False` feeds the prompt's text embedding to the
    decoder instead (see `prior_of`). `embeddings` (clip-image runs): 1 or n CLIP image
    embeddings to decode instead of prompts (`variations`).
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
    prior = prior_of(run, prompts, use_prior, prior_steps, prior_guidance)
    cond, weights = make_condition(run, n, labels, context, prompts, embeddings,
                                   prior.text if prior is not None else None)
    low = _check_low_res(run, n, low_res)
    grid = timestep_grid(run.schedule, steps, spacing or entry.spacing).to(device)

    def prepare(gen: torch.Generator, lo: int, hi: int) -> tuple[Tensor, Condition | None]:
        x = torch.randn((hi - lo, *run.shape), generator=gen, device=device)
        c = None if cond is None else Condition.cat(
            [cond[j * n + lo:j * n + hi] for j in range(len(weights))]).to(device)
        if prior is not None:  # text -> the prior's image embeddings, after x_T is drawn
            with run.autocast(precision):
                c = Condition.from_vectors(sample_prior(prior, c, gen, steps=prior_steps,
                                                        guidance=prior_guidance))
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


def variations(run: Run, image: Tensor, n: int, *, seed: int = 0, progress: bool = True,
               **kwargs) -> Tensor:
    """`n` new images of what `image` shows (DALL-E 2's variations): its CLIP image embedding,
    from the run's own frozen CLIP, decoded with fresh noise. `image` is uint8 [C, H, W] or
    [1, C, H, W] of any size (centre-cropped and resized to the run's, as training images
    were). Uses the recipe's [sample] settings unless overridden in kwargs (`sample`'s); returns
    [n, C, H, W] in [-1, 1]."""
    _check_clip_image(run)
    x = torch.as_tensor(image)
    x = x[None] if x.ndim == 3 else x
    channels = run.image_shape[0]
    if x.dtype != torch.uint8 or x.ndim != 4 or x.shape[:2] != (1, channels):
        raise ConfigError(f"the image must be uint8 [{channels}, H, W] for {run.dir}, got "
                          f"{x.dtype} {list(image.shape)}")
    embedding = run.text.encode_images(resize(x, run.config.data.size))  # [1, D]
    s = run.config.sample
    options = dict(sampler=s.sampler, steps=s.steps, guidance=s.guidance,
                   rescale=s.guidance_rescale) | kwargs
    options = recipe_options(run, options["sampler"]) | options
    return sample(run, n, embeddings=embedding, seed=seed, progress=progress, **options)


__all__ = ["InkfuseError", "Run", "draw", "load_run", "make_condition", "prior_embeddings",
           "recipe_options", "sample", "sample_grid", "sample_prior", "upsample", "variations"]


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
