"""`inkfuse eval`: score a run (or an .npz of samples) and print a table.

    inkfuse eval runs/mnist --metric fid,kid,pr,accuracy,fd_cls --n 1000 --out results.json
    inkfuse eval samples.npz --dataset mnist --metric fid,accuracy
    inkfuse eval runs/mnist --metric bpd --n 1000 --bpd-estimator both   # test-set bits/dim
    inkfuse eval runs/mnist --metric nn --n 1000 --nn-grid copies.png     # the copy check

Scoring itself is `inkfuse.metrics.evaluation`; this prints its results as a table.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import warnings
from pathlib import Path
from typing import Any

from inkfuse.cli.args import (
    GUIDANCE_MAX,
    N_MAX,
    SAMPLER_HELP,
    SEED_MAX,
    STEPS_MAX,
    LazyHelp,
    add_trust_arg,
    existing_run,
    number,
    out_path,
)
from inkfuse.errors import ConfigError


def _metric_help() -> str:
    from inkfuse.metrics.evaluation import METRICS

    return f"comma-separated, from: {','.join(METRICS)} (default: fid)"


def add_parser(subparsers: Any) -> None:
    """Register `eval` on the main parser's subparsers."""
    ev = subparsers.add_parser(
        "eval", help="score a run: FID, KID, precision/recall, class accuracy, FD_cls, "
                     "bits/dim, copy check",
        description="Draw --n samples from a run (or read an .npz from `inkfuse sample`) and "
                    "compute metrics against the dataset's test split; bpd scores --n test "
                    "images instead of samples.")
    ev.add_argument("run_dir", help="run dir, or an .npz of samples (then give --dataset)")
    ev.add_argument("--metric", default="fid", help=LazyHelp(_metric_help))
    ev.add_argument("--n", action=number(int, lo=1, most=1_000_000), default=1000,
                    help="samples to draw, or test images to score for bpd (default 1000)")
    ev.add_argument("--sampler", default=None, help=SAMPLER_HELP)
    ev.add_argument("--steps", action=number(int, lo=1, most=STEPS_MAX), default=None)
    ev.add_argument("--guidance", action=number(float, lo=0, most=GUIDANCE_MAX), default=None,
                    help="CFG weight (default: recipe)")
    ev.add_argument("--eta", action=number(float, lo=0, hi=1), default=None)
    ev.add_argument("--seed", action=number(int, lo=0, most=SEED_MAX), default=0)
    ev.add_argument("--batch-size", action=number(int, lo=1, most=N_MAX), default=256)
    ev.add_argument("--no-ema", action="store_true", help="use the raw weights, not the EMA")
    ev.add_argument("--compile", action="store_true", help="torch.compile the network (tens of "
                    "seconds of compiling; no faster than eager on the benchmark CPU)")
    ev.add_argument("--dataset", default=None, help="reference dataset for an .npz input")
    ev.add_argument("--ref-n", action=number(int, lo=2, most=10_000_000), default=None,
                    help="real images to compare with (default: the whole test split). Inception "
                         "runs at ~25 images/s in bf16 on a 2-core CPU (~14 in fp32), so "
                         "10,000 take ~7 min, once: the statistics are cached")
    ev.add_argument("--resize", default="clean", choices=["clean", "bilinear"],
                    help="FID preprocessing: clean-fid's PIL bicubic (default) or pytorch-fid's")
    ev.add_argument("--fid-weights", default=None,
                    help="Inception TorchScript file (default: $INKFUSE_FID_WEIGHTS or data dir)")
    ev.add_argument("--fid-precision", default="auto", choices=["auto", "fp32", "bf16"],
                    help="what the Inception runs in: bf16 where the hardware has it natively "
                         "(auto, default; ~2× fp32's speed, FIDs up to ~1.2%% from fp32's) or "
                         "fp32, to compare with numbers published in fp32")
    add_trust_arg(ev, "an --fid-weights file, or a run's open_clip text encoder,")
    ev.add_argument("--bpd-estimator", default="both", choices=["vlb", "ode", "both"],
                    help="bpd: the variational bound (vlb), the probability-flow ODE (ode) or "
                         "both (default)")
    ev.add_argument("--bpd-t-samples", action=number(int, lo=1, most=100_000), default=8,
                    help="bpd vlb: importance-sampled steps per image (default 8)")
    ev.add_argument("--bpd-variance", default="posterior", choices=["posterior", "beta"],
                    help="bpd vlb: the reverse steps' fixed variance, the posterior's (default, "
                         "as the ddpm sampler) or beta")
    ev.add_argument("--bpd-ode-steps", action=number(int, lo=1, most=STEPS_MAX), default=32,
                    help="bpd ode: fixed steps in log sigma (default 32, within ~0.02 bits/dim "
                         "of 128 on MNIST; 4 network calls and backward passes each with rk4, "
                         "2 with heun, which needs many more steps)")
    ev.add_argument("--bpd-solver", default="rk4", choices=["rk4", "heun"])
    ev.add_argument("--nn-grid", default=None,
                    help="nn: write the samples closest to a training image beside their 3 "
                         "nearest training images to this .png (default: beside --out)")
    ev.add_argument("--out", default=None, help="also write the results to this .json file")
    ev.add_argument("--quiet", action="store_true", help="no progress bars")
    ev.set_defaults(fn=cmd_eval)


def _format(value: Any) -> str:
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        return f"{value:.4g}" if abs(value) >= 1e-3 or value == 0 else f"{value:.3e}"
    return str(value)


def format_table(results: dict[str, Any]) -> str:
    """The metrics as an aligned two-column table, the settings on one line above it."""
    rows = []
    for key, spread in (("fid", None), ("kid", "kid_std"), ("precision", None),
                        ("recall", None), ("accuracy", None), ("fd_cls", None),
                        ("bpd_vlb", "bpd_vlb_se"), ("bpd_ode", "bpd_ode_se"),
                        ("nn_share", None), ("nn_heldout_share", None)):
        if results.get(key) is not None:
            text = _format(results[key])
            if spread in results:
                text += f" ± {_format(results[spread])}"
            rows.append((key, text))
    settings = ", ".join(f"{k} {results[k]}" for k in
                         ("dataset", "size", "n", "sampler", "steps", "guidance", "seed")
                         if k in results)
    width = max(len(label) for label, _ in rows) if rows else 6
    lines = [settings, f"{'metric':<{width}}  value"]
    lines += [f"{label:<{width}}  {text}" for label, text in rows]
    if "bpd_space" in results:
        kind, shape = results["bpd_space"].split()
        what = ("bits per dimension of the 8-bit pixels" if kind == "pixels"
                else "bits per latent dimension of the VAE's scaled latents, not per pixel")
        lines.append(f"bpd: {what} ({shape}) of {results['bpd_n']} test images, "
                     "mean ± standard error")
    if "nn_share" in results:
        lines.append(f"nn_share: samples nearer a training image than the "
                     f"{results['nn_quantile']:.0%} closest training pairs (real test images: "
                     f"nn_heldout_share)")
    return "\n".join(lines)


def cmd_eval(args: argparse.Namespace) -> None:
    from inkfuse.artifacts.run import load_run
    from inkfuse.metrics.evaluation import evaluate, evaluate_npz, parse_metrics

    metrics = parse_metrics(args.metric)
    out = out_path(args.out, ".json") if args.out else None
    grid = None
    if "nn" in metrics:
        if args.nn_grid is not None:
            grid = out_path(args.nn_grid, ".png", flag="--nn-grid")
        elif out is not None:
            grid = out.with_name(f"{out.stem}-nn.png")
    elif args.nn_grid is not None:
        raise ConfigError("--nn-grid draws the copy check: add nn to --metric")
    bpd = {"bpd_estimators": ("vlb", "ode") if args.bpd_estimator == "both"
           else (args.bpd_estimator,), "bpd_t_samples": args.bpd_t_samples,
           "bpd_ode_steps": args.bpd_ode_steps, "bpd_solver": args.bpd_solver,
           "bpd_variance": args.bpd_variance}
    source = Path(args.run_dir)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", UserWarning)
        if source.suffix.lower() == ".npz":
            if not args.dataset:
                raise ConfigError("an .npz input needs --dataset NAME (mnist, fashion-mnist, "
                                  "cifar10, shapes) to compare against")
            results = evaluate_npz(source, metrics, args.dataset, reference_n=args.ref_n,
                                   resize=args.resize, fid_weights=args.fid_weights,
                                   progress=not args.quiet, seed=args.seed,
                                   trust_weights=args.trust_weights, nn_grid=grid,
                                   fid_precision=args.fid_precision)
        else:
            if args.dataset:
                raise ConfigError("--dataset applies to .npz inputs; a run dir compares "
                                  "against its own dataset")
            existing_run(source)
            if args.compile:
                source = load_run(source, ema=not args.no_ema, compile=True,
                                  trust=args.trust_weights)
            results = evaluate(source, metrics, n=args.n, sampler=args.sampler,
                               steps=args.steps, guidance=args.guidance, seed=args.seed,
                               eta=args.eta, ema=not args.no_ema, batch_size=args.batch_size,
                               reference_n=args.ref_n, resize=args.resize,
                               fid_weights=args.fid_weights, progress=not args.quiet,
                               trust_weights=args.trust_weights, nn_grid=grid,
                               fid_precision=args.fid_precision, **bpd)
    for w in caught:
        if issubclass(w.category, UserWarning):
            print(f"inkfuse: warning: {w.message}", file=sys.stderr)
    print(format_table(results))
    if "nn_grid" in results:
        print(f"wrote {results['nn_grid']}")
    if out is not None:
        from inkfuse.io import atomic_path

        with atomic_path(out) as tmp:
            tmp.write_text(json.dumps(results, indent=2) + "\n")
        print(f"wrote {out}")
