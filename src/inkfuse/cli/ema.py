"""`inkfuse ema`: post-hoc EMA of a run trained with `train.ema_snapshots_every` (Karras et al.
2024, EDM2): reconstruct the EMA of other widths from its snapshots, score them, keep one.

    inkfuse ema runs/shapes --sweep                       # score σ_rel 0.01 .. 0.25, print a table
    inkfuse ema runs/shapes --sweep --best                # ... and make the best the run's EMA
    inkfuse ema runs/shapes --save 0.07                   # make σ_rel 0.07 the run's EMA
    inkfuse ema runs/shapes --restore                     # put the recipe's EMA back

The reconstruction, the scoring and the files are `inkfuse.train.posthoc_ema`; this prints them.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from inkfuse.cli.args import N_MAX, SEED_MAX, existing_run, number, out_path
from inkfuse.config.sections import SIGMA_REL_MAX  # γ = 0: the widest power-function EMA
from inkfuse.errors import ConfigError


def add_parser(subparsers: Any) -> None:
    """Register `ema` on the main parser's subparsers."""
    em = subparsers.add_parser(
        "ema", help="post-hoc EMA: reconstruct, score and keep other EMA lengths",
        description="Reconstruct the EMA of any width sigma_rel at the end of a run from its "
                    "power-function EMA snapshots (train.ema_snapshots_every; Karras et al. "
                    "2024, EDM2), score them with the run's in-training metric, and make one "
                    "the run's EMA weights.")
    em.add_argument("run_dir")
    em.add_argument("--sweep", action="store_true",
                    help="score the recipe's EMA and each --sigma-rels reconstruction")
    em.add_argument("--sigma-rels", action=number(float, lo=0, hi=SIGMA_REL_MAX, lo_open=True,
                                                  many=True), default=None,
                    help="comma-separated widths to sweep (default 0.01,0.02,0.03,0.05,0.07,"
                         "0.1,0.13,0.16,0.2,0.25)")
    em.add_argument("--metric", default=None,
                    help="what to score with (default: the run's in-training metric: fd_cls "
                         "for mnist / fashion-mnist, the shapes checker's accuracy, else fid)")
    em.add_argument("--n", action=number(int, lo=2, most=N_MAX), default=None,
                    help="samples per score (default: the recipe's train.eval_n)")
    em.add_argument("--seed", action=number(int, lo=0, most=SEED_MAX), default=None,
                    help="sampling seed (default: the one train.eval_every uses)")
    em.add_argument("--save", action=number(float, lo=0, hi=SIGMA_REL_MAX, lo_open=True),
                    default=None, metavar="SIGMA_REL",
                    help="make this width's reconstruction the run's EMA (the recipe's is kept "
                         "in ema_snapshots/original-ema.safetensors)")
    em.add_argument("--best", action="store_true",
                    help="with --sweep: save the best-scoring width")
    em.add_argument("--restore", action="store_true",
                    help="put the recipe's EMA back after --save")
    em.add_argument("--out", default=None, help="also write the sweep to this .json file")
    em.set_defaults(fn=cmd_ema)


def _check_flags(args: argparse.Namespace) -> None:
    if args.restore and (args.sweep or args.save is not None or args.best):
        raise ConfigError("--restore puts the recipe's EMA back: give it alone")
    if args.best and not args.sweep:
        raise ConfigError("--best chooses from a sweep: add --sweep")
    if args.best and args.save is not None:
        raise ConfigError("give --best or --save SIGMA_REL, not both")
    if not args.sweep and (args.sigma_rels or args.metric or args.n is not None
                           or args.seed is not None or args.out):
        raise ConfigError("--sigma-rels, --metric, --n, --seed and --out set up a sweep: add "
                          "--sweep")


def _format(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def format_table(rows: list[dict[str, Any]], keys: list[str], ema_decay: float) -> str:
    """One line per EMA: the recipe's first, then each reconstruction, with its scores."""
    recipe = f"recipe (decay {ema_decay:g})" if ema_decay > 0 else "recipe (no EMA)"
    table = [["EMA", "sigma_rel", "gamma", *keys]]
    for row in rows:
        name = recipe if row["sigma_rel"] is None else "post-hoc"
        sigma = None if row["sigma_rel"] is None else f"{row['sigma_rel']:.3f}"
        gamma = None if row["gamma"] is None else f"{row['gamma']:.2f}"
        table.append([name, _format(sigma), _format(gamma), *(_format(row[k]) for k in keys)])
    widths = [max(len(line[i]) for line in table) for i in range(len(table[0]))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True))
                     .rstrip() for line in table)


def cmd_ema(args: argparse.Namespace) -> None:
    from inkfuse.artifacts.run import load_run
    from inkfuse.metrics.evaluation import parse_metrics
    from inkfuse.pipelines import recipe_options
    from inkfuse.train import posthoc_ema, scoring

    _check_flags(args)
    out = out_path(args.out, ".json") if args.out else None
    existing_run(args.run_dir)
    if args.restore:
        print(f"restored the recipe's EMA into {posthoc_ema.restore(Path(args.run_dir))}")
        return
    run = load_run(args.run_dir)
    found = posthoc_ema.run_snapshots(run.dir)
    widths = ", ".join(f"{r:g}" for r in sorted({s.sigma_rel for s in found}))
    print(f"{run.dir}: {len(found)} snapshots of sigma_rel {widths}, up to step "
          f"{max(s.step for s in found)}")
    chosen = args.save
    if args.sweep:
        metrics = (parse_metrics(args.metric) if args.metric
                   else scoring.metrics_for(run.config))
        scoring.check_metrics(metrics)
        keys = scoring.result_keys(metrics)
        n = run.config.train.eval_n if args.n is None else args.n
        seed = scoring.eval_seed(run.config) if args.seed is None else args.seed
        s = run.config.sample
        options = "".join(f", {k} {v:g}" for k, v in recipe_options(run, s.sampler).items())
        print(f"{', '.join(keys)} of {n} samples ({s.sampler}, {s.steps} steps, guidance "
              f"{s.guidance:g}{options}, seed {seed})")
        sigma_rels = args.sigma_rels or list(posthoc_ema.DEFAULT_SIGMA_RELS)
        end, rows = posthoc_ema.sweep(run, sigma_rels, metrics, n, seed)
        print(format_table(rows, keys, run.config.train.ema_decay))
        top = posthoc_ema.best(rows, keys[0])
        print(f"best: sigma_rel {top['sigma_rel']:g} ({keys[0]} {_format(top[keys[0]])}; the "
              f"recipe's EMA: {_format(rows[0][keys[0]])})")
        if args.best:
            chosen = top["sigma_rel"]
        if out is not None:
            from inkfuse.io import atomic_path

            result = {"run": str(run.dir), "end_step": end, "metrics": keys, "n": n,
                      "seed": seed, "rows": rows}
            with atomic_path(out) as tmp:
                tmp.write_text(json.dumps(result, indent=2) + "\n")
            print(f"wrote {out}")
    if chosen is not None:
        end, path = posthoc_ema.save(run.dir, chosen, run.net.state_dict())
        print(f"wrote the sigma_rel {chosen:g} EMA at step {end} into {path} (the recipe's EMA "
              f"is kept: `inkfuse ema {args.run_dir} --restore` puts it back)")
    elif not args.sweep:
        print("nothing to do: give --sweep, --save SIGMA_REL or --restore")
