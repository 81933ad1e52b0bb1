"""`inkfuse viz`: pictures of the forward process and of the noise schedules.

    inkfuse viz forward shapes --out forward.png        # q(x_t | x_0) at growing t
    inkfuse viz schedule ddpm-course --out schedule.png  # ᾱ_t and SNR of the schedules
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any

from inkfuse.cli.args import GUIDANCE_MAX, SEED_MAX, STEPS_MAX, existing_run, number, out_path
from inkfuse.errors import ConfigError

if TYPE_CHECKING:
    from inkfuse.config import Config


def add_parser(subparsers: Any) -> None:
    """Register `viz` on the main parser's subparsers."""
    vz = subparsers.add_parser("viz", help="pictures of the forward process, the noise "
                               "schedule and where a prompt's words attend")
    vz.add_argument("what", choices=["forward", "schedule", "attention", "upsample"])
    vz.add_argument("source", nargs="?", default=None,
                    help="recipe (file or name) or run dir (attention: a text run; upsample: "
                         "none, or two runs to compare, see --compare)")
    vz.add_argument("--out", required=True, help=".png (schedule, attention), .png or .gif "
                    "(forward)")
    vz.add_argument("--prompt", default=None, help="attention: the prompt to sample and draw")
    vz.add_argument("--steps", action=number(int, lo=1, most=STEPS_MAX), default=25,
                    help="attention: sampler steps (default 25)")
    vz.add_argument("--guidance", action=number(float, lo=0, lo_open=True, most=GUIDANCE_MAX),
                    default=None, help="attention: CFG weight (default: the recipe's)")
    vz.add_argument("--at", action=number(float, lo=0, hi=1, many=True), default=None,
                    help="attention: the steps averaged, as fractions of the walk from noise "
                         "(0) to image (1), e.g. 0.25,0.5 (default: every step)")
    vz.add_argument("--n", action=number(int, lo=1, most=256), default=4, help="images (forward)")
    vz.add_argument("--columns", action=number(int, lo=1, most=100), default=8,
                    help="noise levels shown (forward)")
    vz.add_argument("--seed", action=number(int, lo=0, most=SEED_MAX), default=0)
    vz.add_argument("--compare", default=None, metavar="RUN_A,RUN_B",
                    help="upsample: two runs of one recipe that differ in model.up "
                         "(transposed, nearest-conv), sampled from the same seed side by side")
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

    out = out_path(args.out, *((".png", ".gif") if args.what == "forward" else (".png",)))
    if args.what == "attention":
        _attention(args, out)
        return
    if args.what == "upsample":
        _upsample(args, out)
        return
    if args.source is None:
        raise ConfigError(f"viz {args.what} needs a recipe or run dir, e.g. "
                          f"`inkfuse viz {args.what} shapes --out x.png`")
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


def _attention(args: argparse.Namespace, out: Path) -> None:
    """`inkfuse viz attention RUN --prompt ...`: the cross-attention maps of one sample."""
    from inkfuse import viz
    from inkfuse.artifacts.run import load_run
    from inkfuse.attention import cross_attention_maps

    if args.source is None:
        raise ConfigError("viz attention needs a text run: inkfuse viz attention RUN --prompt "
                          "'a red circle' --out a.png")
    if not args.prompt:
        raise ConfigError("viz attention needs --prompt, e.g. --prompt 'a red circle above a "
                          "blue square'")
    run = load_run(existing_run(args.source))
    maps = cross_attention_maps(run, args.prompt, steps=args.steps, guidance=args.guidance,
                                seed=args.seed, at=args.at)
    viz.save_attention_maps(maps.image, maps.maps, maps.tokens, out)
    print(f"wrote {out}")


def _upsample(args: argparse.Namespace, out: Path) -> None:
    """`inkfuse viz upsample`: the checkerboard lesson; with --compare, two trained runs that
    differ in model.up, from the same seed (one row each)."""
    import torch

    from inkfuse import pipelines, viz

    if args.compare is None:
        viz.plot_upsampling(out, seed=args.seed)
        print(f"wrote {out}")
        return
    dirs = [d.strip() for d in args.compare.split(",")]
    if len(dirs) != 2:
        raise ConfigError("--compare takes two run dirs separated by a comma: RUN_A,RUN_B")
    runs = [pipelines.load_run(existing_run(d)) for d in dirs]
    if runs[0].image_shape != runs[1].image_shape:
        raise ConfigError(f"{dirs[0]} and {dirs[1]} draw images of different sizes; compare "
                          "two runs of one recipe that differ only in model.up")
    rows = [pipelines.sample_grid(run, per_class=1, seed=args.seed, progress=False)[0][:8]
            for run in runs]
    labels = [f"up = {run.config.model.up}" for run in runs]
    viz.save_grid(torch.cat(rows), out, nrow=len(rows[0]), labels=labels)
    print(f"wrote {out}")
