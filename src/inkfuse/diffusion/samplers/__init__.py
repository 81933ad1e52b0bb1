"""Samplers: one contract, one registry.

Every sampler is a plain function

    fn(denoiser, x, grid, cond=None, *, generator=None, on_step=None, **its own options) -> x

that walks x from noise at grid[0] to clean data. `grid` is a descending 1-D tensor of (possibly
fractional) steps of the denoiser's schedule; `generator` is the only source of fresh noise, so
the same seed gives the same samples; `on_step(i, x, pred)` sees every intermediate state once
per step, in the VP scale x_t (progress bars, animations). Each function shows its loop, each
update a few lines with its paper's equation; DDPM and DDIM share one loop (`walk`), which
inpainting (`repaint`) walks too, with DDPM's update wrapped; the DPM-Solver++ SDEs share
`sde.sde_walk`.

`SAMPLERS[name]` is the sampler's registry entry (`Sampler`): the function, its default grid,
its model calls for N steps and its options. Callers never inspect signatures: they pass options
the entry names, and any other is a one-line `ConfigError` (`Sampler.check`).

| name       | order | model calls | default grid | options                     |
|------------|-------|-------------|--------------|-----------------------------|
| `ddpm`     | SDE   | N           | trailing     | noise                       |
| `ddim`     | 1     | N           | trailing     | eta                         |
| `euler`    | 1     | N           | karras       | churn, churn_sigma_min/max, churn_noise |
| `heun`     | 2     | 2N − 1      | karras       | as euler                    |
| `dpmpp-2m` | 2     | N           | trailing     |                             |
| `unipc`    | 3     | N           | trailing     |                             |
| `euler-ancestral` | SDE | N     | karras       | eta                         |
| `dpmpp-2m-sde` | SDE   | N        | karras       | eta                         |
| `dpmpp-3m-sde` | SDE   | N        | karras       | eta                         |
| `restart`  | 2 + SDE | 2N−1+2KM | karras       | restart_sigma_min/max, _times K, _steps M |

Build the grid with `schedule.timestep_grid(schedule, steps, SAMPLERS[name].spacing)`. The
multistep solvers use the trailing grid because on cosine-schedule models it beats the Karras
grid at few steps (benchmarks/results/quality_vs_steps_*.md); Euler/Heun use Karras σ capped at
EDM's 80, and so do the stochastic σ-space samplers (ancestral Euler, the DPM-Solver++ SDEs and
Restart, as in k-diffusion): fresh noise at every step forgets the early steps' errors, so the
grid's small steps at low σ matter more than a match to the trained steps.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import partial
from types import MappingProxyType

import torch
from torch import Tensor

from inkfuse.diffusion.conditioning import Condition
from inkfuse.diffusion.samplers.ancestral import euler_ancestral
from inkfuse.diffusion.samplers.ddim import ddim
from inkfuse.diffusion.samplers.ddpm import ddpm
from inkfuse.diffusion.samplers.dpmpp import dpmpp_2m
from inkfuse.diffusion.samplers.euler import euler
from inkfuse.diffusion.samplers.heun import heun
from inkfuse.diffusion.samplers.repaint import repaint
from inkfuse.diffusion.samplers.restart import restart
from inkfuse.diffusion.samplers.sde import dpmpp_2m_sde, dpmpp_3m_sde
from inkfuse.diffusion.samplers.unipc import unipc
from inkfuse.diffusion.samplers.walk import DenoiserFn, OnStep
from inkfuse.errors import ConfigError

SamplerFn = Callable[..., Tensor]  # the contract above; its options are keyword-only


@dataclass(frozen=True)
class Option:
    """One named option of a sampler: its default (the function's own) and what it does."""

    default: float | bool
    doc: str


@dataclass(frozen=True)
class Sampler:
    """The registry entry of one sampler.

    `spacing` is the grid the sampler is meant for (`schedule.timestep_grid`); `nfe(steps)` the
    model evaluations that many steps cost; `options` the keyword options `fn` takes besides
    `generator` and `on_step`, with their defaults.
    """

    name: str
    fn: SamplerFn
    spacing: str
    nfe: Callable[[int], int]
    options: Mapping[str, Option] = field(default_factory=lambda: MappingProxyType({}))

    def check(self, options: Mapping[str, object]) -> dict[str, object]:
        """`options`, or a one-line ConfigError naming those this sampler does not take."""
        unknown = [name for name in options if name not in self.options]
        if unknown:
            takes = ", ".join(self.options) or "none"
            raise ConfigError(f"sampler {self.name!r} has no option {', '.join(unknown)} "
                              f"(its options: {takes})")
        return dict(options)

    def select(self, settings: Mapping[str, object]) -> dict[str, object]:
        """Those of `settings` (e.g. a recipe's [sample] section) that are options of this
        sampler: a recipe's `eta` applies to ddim and is no error for euler."""
        return {name: value for name, value in settings.items() if name in self.options}

    def bind(self, options: Mapping[str, object]) -> SamplerFn:
        """`fn` with `options` (checked) fixed: fn(denoiser, x, grid, cond, *, generator,
        on_step), what `pipelines.draw` walks."""
        return partial(self.fn, **self.check(options))

    def __call__(self, denoiser: DenoiserFn, x: Tensor, grid: Tensor,
                 cond: Condition | None = None, *, generator: torch.Generator | None = None,
                 on_step: OnStep | None = None, **options: object) -> Tensor:
        """`fn` with the options checked first."""
        return self.bind(options)(denoiser, x, grid, cond, generator=generator, on_step=on_step)


def one_call_per_step(steps: int) -> int:
    """One model call per step (the multistep solvers reuse earlier calls)."""
    return steps


def heun_calls(steps: int) -> int:
    """Two calls per step, but the last step (to σ = 0) is Euler: 2N − 1."""
    return 2 * steps - 1


def restart_calls(steps: int) -> int:
    """Heun's 2N − 1, plus K = 1 restart of 9 Heun steps (2 calls each) once the grid reaches
    t_min (steps ≥ 2 on the Karras grid, which ends at the schedule's σ_min < 0.1)."""
    return heun_calls(steps) + (2 * 9 if steps >= 2 else 0)


ETA_SDE = MappingProxyType({
    "eta": Option(1.0, "η: the noise added back per step; 1 is the reverse SDE, 0 the "
                       "probability-flow ODE"),
})


CHURN = MappingProxyType({
    "churn": Option(0.0, "EDM's S_churn: how much noise to add back over the whole walk; "
                         "0 = deterministic"),
    "churn_sigma_min": Option(0.0, "EDM's S_tmin: churn only where σ ≥ this"),
    "churn_sigma_max": Option(math.inf, "EDM's S_tmax: churn only where σ ≤ this"),
    "churn_noise": Option(1.0, "EDM's S_noise: the scale of the added noise"),
})

SAMPLERS: Mapping[str, Sampler] = MappingProxyType({entry.name: entry for entry in [
    Sampler("ddpm", ddpm, "trailing", one_call_per_step, MappingProxyType({
        "noise": Option(True, "fresh noise at every step; False keeps only the posterior mean, "
                              "to show why Algorithm 2 needs it")})),
    Sampler("ddim", ddim, "trailing", one_call_per_step, MappingProxyType({
        "eta": Option(0.0, "η: 0 is deterministic, 1 has DDPM's ancestral variance")})),
    Sampler("euler", euler, "karras", one_call_per_step, CHURN),
    Sampler("heun", heun, "karras", heun_calls, CHURN),
    Sampler("dpmpp-2m", dpmpp_2m, "trailing", one_call_per_step),
    Sampler("unipc", unipc, "trailing", one_call_per_step),
    Sampler("euler-ancestral", euler_ancestral, "karras", one_call_per_step, ETA_SDE),
    Sampler("dpmpp-2m-sde", dpmpp_2m_sde, "karras", one_call_per_step, ETA_SDE),
    Sampler("dpmpp-3m-sde", dpmpp_3m_sde, "karras", one_call_per_step, ETA_SDE),
    Sampler("restart", restart, "karras", restart_calls, MappingProxyType({
        "restart_sigma_min": Option(0.1, "t_min: restart at the first grid level σ ≤ this"),
        "restart_sigma_max": Option(2.0, "t_max: the noise level each restart jumps up to"),
        "restart_times": Option(1, "K: how many times to jump up and solve back down"),
        "restart_steps": Option(9, "Heun steps from t_max back down to t_min, per restart"),
    })),
]})


def get_sampler(name: str) -> Sampler:
    """The registry entry of `name`, or a one-line ConfigError listing the samplers."""
    if name not in SAMPLERS:
        raise ConfigError(f"unknown sampler {name!r} (choose from {', '.join(SAMPLERS)})")
    return SAMPLERS[name]


__all__ = [
    "SAMPLERS", "Option", "Sampler", "ddim", "ddpm", "dpmpp_2m", "dpmpp_2m_sde", "dpmpp_3m_sde",
    "euler", "euler_ancestral", "get_sampler", "heun", "repaint", "restart", "unipc",
]
