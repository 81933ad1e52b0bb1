"""`inkfuse invert`: learn a new word for a text run from a few images (textual inversion, Gal
et al. 2022); every later `inkfuse sample` of the run reads it in prompts.

    inkfuse invert runs/text --images mine/ --token "<magenta-ish>" --init red
    inkfuse sample runs/text --prompt "a <magenta-ish> circle above a red square" --out x.png

The images' folder may caption them in captions.csv (`path,caption`, each caption naming the
token: "a small <magenta-ish> circle in the top left"); without one, templates such as
"a <magenta-ish>" caption them. Interrupted, the same command resumes.
"""

from __future__ import annotations

import argparse
from typing import Any

from inkfuse.cli.args import SEED_MAX, STEPS_MAX, add_set_args, existing_run, number, overrides


def add_parser(subparsers: Any) -> None:
    """Register `invert` on the main parser's subparsers."""
    p = subparsers.add_parser("invert", help="learn a new word for a text run from a few "
                              "images (textual inversion)")
    p.add_argument("run_dir", help="a text run dir (data.labels = 'text')")
    p.add_argument("--images", required=True,
                   help="folder of the concept's images (3 to 10 are usual); a captions.csv "
                        "(path,caption) in it captions them, each caption naming the token")
    p.add_argument("--token", required=True,
                   help="the new word, e.g. '<magenta-ish>': no spaces, lower case, not a word "
                        "the run's text encoder knows")
    p.add_argument("--init", default=None,
                   help="a known word to start from, a coarse description of the concept "
                        "(default: the mean of every word the text encoder read)")
    p.add_argument("--steps", action=number(int, lo=1, most=STEPS_MAX), default=None,
                   help="optimisation steps (default 600; shorthand for --set train.steps=N)")
    p.add_argument("--lr", action=number(float, lo=0, hi=10, lo_open=True), default=None,
                   help="learning rate of the row (default 5e-3; --set train.lr=X)")
    p.add_argument("--seed", action=number(int, lo=0, most=SEED_MAX), default=None,
                   help="fixes every draw: captions, timesteps, noise (--set train.seed=N)")
    p.add_argument("--force", action="store_true",
                   help="learn a token the run has learned already again, from scratch")
    add_set_args(p)
    # Ctrl-C keeps a checkpoint only once the command has named its folder (cmd_invert)
    p.set_defaults(fn=cmd_invert, resumable=False)


def cmd_invert(args: argparse.Namespace) -> None:
    from inkfuse.artifacts.log import LOG, read_log
    from inkfuse.artifacts.tokens import work_dir
    from inkfuse.config import InvertConfig, apply_overrides
    from inkfuse.train.invert import invert

    given = {"train.steps": args.steps, "train.lr": args.lr, "train.seed": args.seed}
    sets = [*args.set, *(f"{k}={v}" for k, v in given.items() if v is not None)]
    raw = {"invert": {"images": args.images, "token": args.token, "init": args.init or ""}}
    config = InvertConfig.from_dict(apply_overrides(raw, overrides(args, sets), "inkfuse invert"),
                                    source="inkfuse invert")
    token = config.invert.token
    # what app.main's Ctrl-C message looks in for the checkpoint it keeps
    args.out, args.resumable = str(work_dir(args.run_dir, token)), True
    path = invert(existing_run(args.run_dir), config, force=args.force, progress=not args.quiet)
    losses = [r["loss"] for r in read_log(work_dir(args.run_dir, token) / LOG) if "loss" in r]
    q = max(1, len(losses) // 4)  # a step's loss swings with its random t: quarters of the log
    trend = (f" (mean loss {sum(losses[:q]) / q:.4f} in the first quarter, "
             f"{sum(losses[-q:]) / q:.4f} in the last)") if losses else ""
    print(f"learned {token!r} for {args.run_dir}{trend}: {path}")
    print(f"use it: inkfuse sample {args.run_dir} --prompt 'a {token}' --out samples.png")
