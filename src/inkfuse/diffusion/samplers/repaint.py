"""RePaint (Lugmayr et al. 2022): inpainting with an unconditionally trained DDPM, by wrapping
its update and walking its loop (`walk`), not by copying them.

After each reverse step the known region is put back as the original noised to the same level:

    x_prev = m ⊙ ddpm_step(x_t) + (1 − m) ⊙ q_sample(x_0, t_prev, ε)     (RePaint eq. 8–10)

with m = 1 where to fill (RePaint's m marks the known pixels instead).

With `resample` = R > 1 each step but the last is taken R times, going back up between tries
with the forward process q(x_t | x_prev) (RePaint §4.2 and Algorithm 1, jump length 1): the
known and generated regions get R chances to agree. Going back up is a path through `walk`
that rises (`repaint_path`), so RePaint needs no loop of its own.
"""

from __future__ import annotations

import torch
from torch import Tensor

from inkfuse.diffusion.conditioning import Condition
from inkfuse.diffusion.denoiser import Prediction
from inkfuse.diffusion.samplers.ddpm import ddpm_step
from inkfuse.diffusion.samplers.walk import DenoiserFn, OnStep, Update, randn, walk


def repaint_path(grid: Tensor, resample: int) -> Tensor:
    """The steps RePaint visits on a descending `grid` t_0 > t_1 > … > t_{N−1}: each step down
    but the last taken `resample` times, with a step back up between tries,
        t_0, t_1, (t_0, t_1) × (R − 1), t_2, (t_1, t_2) × (R − 1), …, t_{N−1}."""
    index = [0]
    for i in range(len(grid) - 1):
        index += [i + 1] + [i, i + 1] * (resample - 1)
    return grid[torch.tensor(index, device=grid.device)]


def keep_known(update: Update, x0: Tensor, keep: Tensor,
               generator: torch.Generator | None) -> Update:
    """`update`, then the known region (`keep`, broadcast over x) set to x_0 noised to ᾱ_prev."""

    def paste(x: Tensor, pred: Prediction, ab_t: Tensor, ab_prev: Tensor,
              z: Tensor | None) -> Tensor:
        x_gen = update(x, pred, ab_t, ab_prev, z)
        known = ab_prev.sqrt() * x0 + (1 - ab_prev).sqrt() * randn(x, generator)  # DDPM eq. 4
        return torch.where(keep, known, x_gen)

    return paste


def repaint(
    denoiser: DenoiserFn, x: Tensor, grid: Tensor, cond: Condition | None = None, *,
    x0: Tensor, keep: Tensor, resample: int = 1, generator: torch.Generator | None = None,
    on_step: OnStep | None = None,
) -> Tensor:
    """Fill where `keep` ([B or 1, 1 or C, H, W] bool) is False, from noise `x` at grid[0]; the
    sampler contract, with the known values `x0` and `keep` as its options.

    The known region of the result is x0 itself: the last step's paste noises it by
    sqrt(1 − ᾱ) = 0, and the final paste makes that exact (0 · ε may flip the sign of a zero).
    `on_step` follows each model call, (N − 1) R + 1 in all.
    """
    path = repaint_path(grid, resample)
    x = walk(denoiser, x, path, cond, keep_known(ddpm_step, x0, keep, generator),
             stochastic=True, generator=generator, on_step=on_step)
    return torch.where(keep, x0, x)
