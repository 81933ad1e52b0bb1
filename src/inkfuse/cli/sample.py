"""`inkfuse sample`: draw images from a run into a .png grid, a .gif of the reverse process or an
.npz of arrays.

    inkfuse sample runs/shapes --class 2 --guidance 3 --steps 50 --out circles.png
    inkfuse sample runs/text --prompts-file prompts.txt --guidance 0,1,2,4,8 --out sweep.png
    inkfuse sample runs/demo --upsample runs/shapes-sr --out big.png      # a cascade
    inkfuse sample runs/unclip --prompt "a red circle" --no-prior --out x.png   # skip the prior

One grid row per (guidance weight, prompt), every row from the same noise, so a guidance sweep
or a list of prompts compares like with like.
"""

from __future__ import annotations

import argparse
from typing import Any

from inkfuse.cli.args import (
    GUIDANCE_MAX,
    N_MAX,
    SAMPLER_HELP,
    SEED_MAX,
    STEPS_MAX,
    add_condition_args,
    add_trust_arg,
    condition,
    existing_run,
    number,
    out_path,
    write_npz,
)
from inkfuse.errors import ConfigError


def add_parser(subparsers: Any) -> None:
    """Register `sample` on the main parser's subparsers."""
    sa = subparsers.add_parser("sample", help="draw images from a trained run")
    sa.add_argument("run_dir")
    sa.add_argument("--n", action=number(int, lo=1, most=N_MAX), default=16,
                    help="samples (per prompt and guidance weight)")
    sa.add_argument("--sampler", default=None, help=SAMPLER_HELP)
    sa.add_argument("--steps", action=number(int, lo=1, most=STEPS_MAX), default=None)
    sa.add_argument("--spacing", default=None,
                    help="timestep grid: leading, trailing, linspace or karras (default: the "
                         "sampler's own)")
    sa.add_argument("--eta", action=number(float, lo=0, hi=1), default=None,
                    help="DDIM noise: 0 deterministic")
    sa.add_argument("--churn", action=number(float, lo=0, most=1000), default=None,
                    help="EDM S_churn (euler, heun)")
    sa.add_argument("--guidance", action=number(float, lo=0, most=GUIDANCE_MAX, many=True),
                    default=None,
                    help="CFG weight w in eps_u + w (eps_c - eps_u); 1 = no guidance; "
                         "several (0,1,2,4,8) give one row each")
    sa.add_argument("--rescale", action=number(float, lo=0, hi=1), default=None,
                    help="guidance rescale φ in [0, 1] (Lin et al. 2024; default: the recipe's)")
    sa.add_argument("--threshold", choices=("none", "static", "dynamic"), default=None,
                    help="the guided x̂0: as predicted, clipped to [-1, 1], or Imagen's dynamic "
                         "thresholding (pixel models; default: the recipe's)")
    sa.add_argument("--threshold-percentile", action=number(float, lo=0.5, hi=1), default=None,
                    help="dynamic thresholding's percentile p (default: the recipe's, 0.995)")
    add_condition_args(sa, context=True, many=True)
    sa.add_argument("--no-prior", action="store_true",
                    help="a CLIP-image run with a diffusion prior: give the decoder the prompt's "
                         "text embedding, not the prior's image embedding (the course's trick)")
    sa.add_argument("--prior-steps", action=number(int, lo=1, most=STEPS_MAX), default=None,
                    help="the prior's sampler steps (default: its [prior] sample_steps)")
    sa.add_argument("--prior-guidance", action=number(float, lo=0, most=GUIDANCE_MAX),
                    default=None, help="the prior's CFG weight (default: its [prior] guidance)")
    sa.add_argument("--upsample", default=None, metavar="SR_RUN",
                    help="a super-resolution run that draws the samples again, larger")
    sa.add_argument("--seed", action=number(int, lo=0, most=SEED_MAX), default=0)
    sa.add_argument("--no-ema", action="store_true", help="use the raw weights, not the EMA")
    sa.add_argument("--compile", action="store_true", help="torch.compile the network (tens of "
                    "seconds of compiling; no faster than eager on the benchmark CPU)")
    sa.add_argument("--no-noise", action="store_true",
                    help="DDPM without fresh noise per step (to see why it is needed)")
    add_trust_arg(sa, "a run's open_clip text encoder")
    sa.add_argument("--out", required=True, help=".png grid, .gif animation or .npz arrays")
    sa.set_defaults(fn=cmd_sample)


def cmd_sample(args: argparse.Namespace) -> None:
    import numpy as np
    import torch

    from inkfuse import pipelines, viz

    out = out_path(args.out, ".png", ".gif", ".npz")
    if args.no_prior and (args.prior_steps is not None or args.prior_guidance is not None):
        raise ConfigError("--prior-steps and --prior-guidance set the prior that --no-prior "
                          "turns off: drop one of them")
    run = pipelines.load_run(existing_run(args.run_dir), ema=not args.no_ema,
                             compile=args.compile, trust=args.trust_weights,
                             prior=not args.no_prior)
    s = run.config.sample
    cond = condition(args)
    prompts = cond["prompts"]
    guidances = args.guidance or [s.guidance]
    jobs = [(w, p) for w in guidances for p in (prompts or [None])]
    if out.suffix == ".gif" and (len(jobs) > 1 or args.n > 64):
        raise ConfigError("a .gif animates one prompt at one guidance weight, at most 64 "
                          "samples: give one of each and lower --n, or write a .png")
    frames: list[torch.Tensor] = []
    sampler = args.sampler or s.sampler
    # the sampler's own options: the recipe's (eta for ddim), then those given; one the sampler
    # does not take (--churn for ddim) is a one-line error from `sample`
    given = {"eta": args.eta, "churn": args.churn, "noise": False if args.no_noise else None}
    options = dict(
        sampler=sampler, steps=s.steps if args.steps is None else args.steps, seed=args.seed,
        progress=True,
        rescale=s.guidance_rescale if args.rescale is None else args.rescale,
        spacing=args.spacing, thresholding=args.threshold,
        threshold_percentile=args.threshold_percentile, use_prior=not args.no_prior,
        prior_steps=args.prior_steps, prior_guidance=args.prior_guidance,
        on_step=(lambda i, x, p: frames.append(x.clamp(-1, 1).cpu())) if out.suffix == ".gif"
        else None,
    ) | pipelines.recipe_options(run, sampler) | {k: v for k, v in given.items() if v is not None}
    sr = (pipelines.load_run(existing_run(args.upsample), trust=args.trust_weights)
          if args.upsample else None)
    if sr is not None and out.suffix == ".gif":
        raise ConfigError("--upsample writes the final images: use a .png or .npz --out")

    def draw(w: float, prompt: str | None) -> torch.Tensor:
        """One row: the run's samples, or with --upsample the cascade's."""
        row = cond | {"prompts": None if prompt is None else [prompt]}
        if sr is None:
            return pipelines.sample(run, args.n, guidance=w, **row, **options)
        return pipelines.sample_cascade(run, sr, args.n, guidance=w, **row, **options)

    images = torch.cat([draw(w, p) for w, p in jobs])
    rows = [" · ".join(filter(None, [f"w={w:g}" if len(guidances) > 1 else "", p or ""]))
            for w, p in jobs]
    cond_dim = run.config.model.cond_dim
    class_grid = (len(jobs) == 1 and run.text is None and cond_dim and cond["labels"] is None
                  and cond["context"] is None and args.n > cond_dim)
    nrow = cond_dim if class_grid else args.n if len(jobs) > 1 or prompts else min(args.n, 8)
    if out.suffix == ".png":
        viz.save_grid(images, out, nrow=nrow, labels=rows if any(rows) else None)
    elif out.suffix == ".gif":
        viz.save_gif(frames, out, nrow=nrow)
    else:
        arrays = {"images": viz.to_uint8(images),
                  "guidance": np.repeat([w for w, _ in jobs], args.n).astype(np.float32)}
        if prompts:
            arrays["prompts"] = np.repeat([p for _, p in jobs], args.n)
        labels = pipelines.class_labels(run, args.n, cond["labels"])
        if labels is not None and cond["context"] is None:
            arrays["labels"] = np.tile(labels.numpy().astype(np.int64), len(jobs))
        write_npz(out, **arrays)
    print(f"wrote {len(images)} samples to {out}")
