"""`inkfuse viz`: pictures of the forward process and of the noise schedules.

    inkfuse viz forward shapes --out forward.png        # q(x_t | x_0) at growing t
    inkfuse viz schedule ddpm-course --out schedule.png  # ᾱ_t and SNR of the schedules
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any

from inkfuse.cli.args import SEED_MAX, number, out_path

if TYPE_CHECKING:
    from inkfuse.config import Config


def add_parser(subparsers: Any) -> None:
    """Register `viz` on the main parser's subparsers."""
    vz = subparsers.add_parser("viz", help="pictures of the forward process and the noise "
                               "schedule")
    vz.add_argument("what", choices=["forward", "schedule"])
    vz.add_argument("source", help="recipe (file or name) or run dir")
    vz.add_argument("--out", required=True, help=".png (schedule), .png or .gif (forward)")
    vz.add_argument("--n", action=number(int, lo=1, most=256), default=4, help="images (forward)")
    vz.add_argument("--columns", action=number(int, lo=1, most=100), default=8,
                    help="noise levels shown (forward)")
    vz.add_argument("--seed", action=number(int, lo=0, most=SEED_MAX), default=0)
    vz.set_defaults(fn=cmd_viz)


def _config_of(recipe_or_run: str) -> Config:
    """A run dir's config, or a recipe's: both can be looked at before training."""
    from inkfuse.config import load_recipe

    if Path(recipe_or_run).is_dir():
        from inkfuse.artifacts.run import load_run

        return load_run(recipe_or_run).config
    return load_recipe(recipe_or_run)


def cmd_viz(args: argparse.Namespace) -> None:
    import torch

    from inkfuse import viz
    from inkfuse.diffusion import Schedule

    out = out_path(args.out, *((".png",) if args.what == "schedule" else (".png", ".gif")))
    config = _config_of(args.source)
    dc = config.diffusion
    if args.what == "schedule":
        curves = {}
        for kind in dict.fromkeys([dc.schedule, "linear", "cosine", "sigmoid"]):
            s = Schedule(kind, dc.timesteps, dc.beta_start, dc.beta_end)
            t = torch.arange(dc.timesteps)
            curves[kind] = {"t": t.numpy(), "alphas_cumprod": s.alphas_cumprod.numpy(),
                            "snr": s.snr(t).numpy()}
        viz.plot_schedule(curves, out)
    else:
        from inkfuse.config import replace
        from inkfuse.data import build_dataset

        data = build_dataset(replace(config, data={"limit": args.n}).data)
        s = Schedule.of(dc)
        x0 = data.to_float()[: args.n]
        ts = torch.linspace(0, dc.timesteps - 1, args.columns).round().long()
        gen = torch.Generator().manual_seed(args.seed)
        noise = torch.randn(x0.shape, generator=gen)
        noisy = [s.q_sample(x0, t.expand(len(x0)), noise) for t in ts]
        viz.save_forward_strip(x0, noisy, [f"t={t}" for t in ts.tolist()], out)
    print(f"wrote {out}")
