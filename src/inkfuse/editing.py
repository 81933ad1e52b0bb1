"""Editing images with a trained run, no extra training: inpainting and image-to-image.

Both start from the forward process q(x_t | x_0) = N(sqrt(ᾱ_t) x_0, (1 − ᾱ_t) I) of a real image,
and both run a sampler through `pipelines.draw`, the set-up `sample` uses too.

**Inpainting** (RePaint, Lugmayr et al. 2022, `samplers.repaint`). Walk the reverse process on
the run's trailing grid with ancestral DDPM steps; after each step, put back the known region as
the original noised to the same level:

    x_prev = m ⊙ ddpm_step(x_t) + (1 − m) ⊙ q_sample(x_0, t_prev, ε)      (m = 1: fill)

With `resample` = R > 1, each step is redone R times, going back up between tries with
q(x_t | x_prev) = N(sqrt(ᾱ_t / ᾱ_prev) x_prev, (1 − ᾱ_t / ᾱ_prev) I): the known and generated
regions get R chances to agree (RePaint's resampling, with a jump length of one step). At the
end the known pixels are pasted exactly, so they come back bit for bit.

**Image-to-image** (SDEdit, Meng et al. 2022). Noise the image with q_sample to the largest step
t_start of the sampler's grid at or below strength · (T − 1), then let the sampler denoise from
there on the rest of its grid. strength = 1 starts from (almost) pure noise and keeps little of
the input; a strength whose t_start would fall below the grid's last step returns the input.

**Any size in, the same size out.** The model works at its own resolution; an image of another
size (any H x W, not only square) is resized to it for the model, and the result is resized back
to the image's own size: img2img returns the model's output enlarged (or shrunk) to H x W, and
inpainting pastes the original's known pixels, at H x W, over the enlarged fill, so they come
back exactly. A model-size image takes neither step, so its result is what it always was.

    run = load_run("runs/shapes")
    filled = inpaint(run, image, mask, labels=[2], guidance=3.0)
    edited = img2img(run, image, strength=0.5)
"""

from __future__ import annotations

from functools import partial

import torch
import torch.nn.functional as F
from torch import Tensor

from inkfuse.artifacts.run import Run
from inkfuse.diffusion import Condition
from inkfuse.diffusion.samplers import get_sampler, repaint
from inkfuse.diffusion.samplers.walk import DenoiserFn, OnStep
from inkfuse.diffusion.schedule import timestep_grid
from inkfuse.diffusion.upsampling import shrink
from inkfuse.errors import ConfigError, DataError
from inkfuse.pipelines import draw, make_condition, recipe_options


@torch.no_grad()
def inpaint(
    run: Run, image: Tensor, mask: Tensor, *, steps: int = 50, guidance: float | None = None,
    labels: Tensor | None = None, context: Tensor | None = None,
    prompts: list[str] | None = None, seed: int = 0, resample: int = 1, progress: bool = True,
    on_step: OnStep | None = None,
) -> Tensor:
    """Fill the region where `mask` is 1 (> 0.5) and keep the rest of `image` exactly.

    image: [N, C, H, W] in [-1, 1] with the run's channels, of any size (see the module doc);
    mask: [N or 1, 1, H, W] (or [H, W]) at the image's size (or at the model's), 1 = fill,
    0 = keep; the result has the image's size and its unmasked pixels exactly.
    `guidance` (CFG weight, default the recipe's) applies when labels, context or prompts are
    given; without them a conditional model runs unconditionally.
    Returns [N, C, H, W] in [-1, 1] on the CPU; same seed, same result. An empty mask returns
    the input. `on_step(i, x, pred)` sees each intermediate state at the model's size.
    """
    if resample < 1:
        raise ConfigError(f"--resample must be at least 1, got {resample}")
    given = _check_image(run, image)  # [N, C, H, W] at the image's own size
    keep_given = _check_mask(mask, given, run.image_shape[1]) <= 0.5  # True = known pixel
    if keep_given.all():
        return given.cpu()
    size = run.image_shape[1]
    # at the model's size a pixel is filled when any pixel of the image it covers is
    pixels = _to_size(given, size)
    keep_pixels = keep_given if pixels is given else ~_fill_at(~keep_given, size)
    # latent runs fill the latents that see any masked pixel, then decode
    x0, keep = pixels, keep_pixels
    if run.latent is not None:
        x0 = run.latent.encode(pixels)
        keep = shrink((~keep_pixels).float(), x0.shape[-1]) == 0
    denoiser, cond = _denoiser(run, len(x0), guidance, labels, context, prompts)
    grid = timestep_grid(run.schedule, steps, "trailing").to(run.device)

    def prepare(gen: torch.Generator, lo: int, hi: int) -> tuple[Tensor, Condition | None]:
        return torch.randn(x0.shape, generator=gen, device=run.device), cond  # one batch

    filled = draw(run, partial(repaint, x0=x0, keep=keep, resample=resample), denoiser, grid,
                  len(x0), prepare, seed=seed, progress=progress, desc=f"inpaint {steps} steps",
                  calls=(len(grid) - 1) * resample + 1, on_step=on_step)
    if run.latent is None:
        filled = filled.clamp(-1, 1)
    if pixels is not given:  # back at the image's size, the known pixels its own
        filled = _to_size(filled, tuple(given.shape[-2:])).clamp(-1, 1)
    return torch.where(keep_given.cpu(), given.cpu(), filled)


@torch.no_grad()
def img2img(
    run: Run, image: Tensor, *, strength: float = 0.6, steps: int = 50, sampler: str = "ddim",
    guidance: float | None = None, labels: Tensor | None = None, context: Tensor | None = None,
    prompts: list[str] | None = None, seed: int = 0, progress: bool = True,
    on_step: OnStep | None = None, **options: object,
) -> Tensor:
    """SDEdit: noise `image` ([N, C, H, W] in [-1, 1], any size) to about strength · (T − 1),
    denoise back; the result has the image's size (see the module doc).

    `sampler` is any registered sampler, on its own default grid for `steps` steps, of which
    only the steps at or below strength · (T − 1) run; `options` are its own, by default the
    recipe's (as for `sample`). Returns [N, C, H, W] in [-1, 1] on the CPU; same seed, same
    result. `on_step(i, x, pred)` sees each intermediate state at the model's size.
    """
    if not 0 < strength <= 1:
        raise ConfigError(f"--strength must be in (0, 1], got {strength}")
    entry = get_sampler(sampler)
    walk = entry.bind(recipe_options(run, sampler) | options)
    given = _check_image(run, image)
    pixels = _to_size(given, run.image_shape[1])
    x0 = pixels if run.latent is None else run.latent.encode(pixels)
    schedule = run.schedule
    grid = timestep_grid(schedule, steps, entry.spacing).to(run.device)
    ts = grid[grid <= strength * (schedule.T - 1) + 1e-6]
    if len(ts) == 0:  # too little noise to reach even the grid's last step: nothing to change
        return given.cpu()
    denoiser, cond = _denoiser(run, len(x0), guidance, labels, context, prompts)

    def prepare(gen: torch.Generator, lo: int, hi: int) -> tuple[Tensor, Condition | None]:
        eps = torch.randn(x0.shape, generator=gen, device=run.device)  # one batch
        return schedule.q_sample(x0, ts[0].expand(len(x0)), eps), cond

    out = draw(run, walk, denoiser, ts, len(x0), prepare, seed=seed, progress=progress,
               desc=f"img2img {sampler} {len(ts)}/{len(grid)} steps",
               on_step=on_step).clamp(-1, 1)
    return out if pixels is given else _to_size(out, tuple(given.shape[-2:])).clamp(-1, 1)


# --- shared checks ----------------------------------------------------------------------------

def _to_size(x: Tensor, size: int | tuple[int, int]) -> Tensor:
    """Float images [N, C, H, W] resized to `size` (int: square): bilinear with antialiasing
    (a shrink averages the area, as PIL does). `x` itself when it has that size already."""
    hw = (size, size) if isinstance(size, int) else size
    if tuple(x.shape[-2:]) == hw:
        return x
    return F.interpolate(x, size=hw, mode="bilinear", antialias=True, align_corners=False)


def _fill_at(fill: Tensor, size: int) -> Tensor:
    """A bool fill mask [N, 1, H, W] at `size` x `size`: True where any pixel it covers is."""
    return F.adaptive_max_pool2d(fill.float(), (size, size)) > 0


def _check_image(run: Run, image: Tensor) -> Tensor:
    """The image as float [N, C, H, W] on the run's device (any H, W), or a one-line
    DataError."""
    image = torch.as_tensor(image)
    if image.ndim == 3:
        image = image[None]
    c = run.image_shape[0]
    if image.ndim != 4 or min(image.shape) < 1:
        raise DataError(f"expected an image [N, C, H, W], got shape {tuple(image.shape)}")
    if image.shape[1] != c:
        raise DataError(f"the image has {image.shape[1]} channels but the model in {run.dir} "
                        f"draws {c}: convert it (load_image(path, None, channels={c}))")
    if not image.is_floating_point():
        raise DataError("expected a float image in [-1, 1], got integers "
                        "(convert with x / 127.5 - 1)")
    image = image.to(run.device, torch.float32)
    if not torch.isfinite(image).all():
        raise DataError("the image has NaN or infinite values: give pixels in [-1, 1]")
    return image


def _check_mask(mask: Tensor, x0: Tensor, model_size: int) -> Tensor:
    """The mask as float [N or 1, 1, H, W] at `x0`'s size, or a one-line DataError. A mask at
    the model's size is enlarged to the image's (nearest: each model pixel is a block)."""
    mask = torch.as_tensor(mask).to(x0.device, torch.float32)
    while mask.ndim < 4:
        mask = mask[None]
    h, w = x0.shape[-2:]
    if mask.ndim != 4 or mask.shape[1] != 1 or mask.shape[0] not in (1, len(x0)):
        raise DataError(f"expected a mask [N, 1, H, W] or [H, W], got shape {tuple(mask.shape)}")
    if not torch.isfinite(mask).all():
        raise DataError("the mask has NaN or infinite values: give 1 = fill, 0 = keep")
    if tuple(mask.shape[-2:]) == (model_size, model_size) != (h, w):
        mask = F.interpolate(mask, size=(h, w), mode="nearest")
    if tuple(mask.shape[-2:]) != (h, w):
        mh, mw = mask.shape[-2:]
        raise DataError(f"the mask is {mw}x{mh} but the image is {w}x{h}: "
                        "give a mask of the same size")
    return mask


def _denoiser(run: Run, n: int, guidance: float | None, labels: Tensor | None,
              context: Tensor | None, prompts: list[str] | None
              ) -> tuple[DenoiserFn, Condition | None]:
    """The (guided) denoiser and condition: unconditional unless labels, context or prompts are
    given (a conditional model called without a condition uses its null condition)."""
    if guidance is None:
        guidance = run.config.sample.guidance
    if guidance < 0:
        raise ConfigError(f"--guidance must be >= 0, got {guidance}")
    if labels is None and context is None and prompts is None:
        return run.denoiser(1.0), None
    cond, weights = make_condition(run, n, labels, context, prompts)
    return run.denoiser(guidance, weights=weights), None if cond is None else cond.to(run.device)


__all__ = ["img2img", "inpaint"]
