"""Samplers: plain functions `sampler(denoiser, x_T, timesteps, cond, *, generator, on_step)`.

`timesteps` is a descending 1-D tensor of (possibly fractional) steps of the denoiser's
schedule; the sampler walks x from the first to clean data. `on_step(i, x, pred)` sees every
intermediate state (for progress bars and animations), once per step, in the VP scale x_t.

| name         | function   | order | model calls  | default grid (`SPACING`) |
|--------------|------------|-------|--------------|--------------------------|
| `ddpm`       | `ddpm`     | SDE   | N            | trailing                 |
| `ddim`       | `ddim`     | 1     | N            | trailing                 |
| `euler`      | `euler`    | 1     | N            | karras                   |
| `heun`       | `heun`     | 2     | 2N − 1       | karras                   |
| `dpmpp-2m`   | `dpmpp_2m` | 2     | N            | trailing                 |
| `unipc`      | `unipc`    | 3     | N            | trailing                 |

Build the grid with `schedule.timestep_grid(schedule, steps, SPACING[name])`. The multistep
solvers use the trailing grid: on cosine-schedule models they beat the Karras grid at 5-10
steps (benchmarks/results/quality_vs_steps_*.md); Euler/Heun use Karras σ capped at EDM's 80.
"""

from inkfuse.diffusion.samplers.ddim import ddim
from inkfuse.diffusion.samplers.ddpm import ddpm
from inkfuse.diffusion.samplers.dpmpp import dpmpp_2m, unipc
from inkfuse.diffusion.samplers.euler import euler
from inkfuse.diffusion.samplers.heun import heun
from inkfuse.errors import ConfigError

SAMPLERS = {
    "ddpm": ddpm, "ddim": ddim, "euler": euler, "heun": heun, "dpmpp-2m": dpmpp_2m,
    "unipc": unipc,
}

# The timestep spacing each sampler is meant for (see `schedule.timestep_grid`).
SPACING = {
    "ddpm": "trailing", "ddim": "trailing", "euler": "karras", "heun": "karras",
    "dpmpp-2m": "trailing", "unipc": "trailing",
}


def nfe(name: str, steps: int) -> int:
    """Model evaluations for `steps` steps of sampler `name` (Heun's last step is Euler)."""
    if name not in SAMPLERS:
        raise ConfigError(f"unknown sampler {name!r} (choose from {', '.join(SAMPLERS)})")
    return 2 * steps - 1 if name == "heun" else steps


__all__ = ["SAMPLERS", "SPACING", "ddim", "ddpm", "dpmpp_2m", "euler", "heun", "nfe", "unipc"]
