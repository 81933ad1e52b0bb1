"""The `inkfuse` command. Parses arguments, shows progress, maps errors to one line; no logic.

Every mistake a user can fix (bad path, bad value, damaged file) is an `InkfuseError`; it is
printed as `inkfuse: error: ...` with exit status 1, never as a traceback.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

from inkfuse import config as config_mod
from inkfuse.clip.cli import add_clip_parser
from inkfuse.diffusion.samplers import SAMPLERS
from inkfuse.diffusion.schedule import SPACINGS
from inkfuse.editing_cli import add_editing_parsers
from inkfuse.errors import ConfigError, InkfuseError
from inkfuse.metrics.cli import add_eval_parser
from inkfuse.runtime import keep_freed_memory
from inkfuse.vae_cli import add_vae_parser


def _floats(text: str) -> list[float]:
    try:
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ConfigError(f"expected comma-separated numbers, got {text!r}") from None


def _out_path(path: str, suffixes: tuple[str, ...]) -> Path:
    out = Path(path)
    if out.suffix.lower() not in suffixes:
        raise ConfigError(f"--out {path}: use a file ending in {', '.join(suffixes)}")
    out.parent.mkdir(parents=True, exist_ok=True)
    return out


# --- train / demo ---------------------------------------------------------------------------

def cmd_train(args: argparse.Namespace) -> None:
    from inkfuse.train import train

    overrides = list(args.set)
    if args.max_minutes is not None:
        overrides.append(f"train.max_minutes={args.max_minutes}")
    config = config_mod.load_recipe(args.recipe, overrides)
    out = args.out or f"runs/{config_mod.resolve_recipe(args.recipe).stem}"
    run_dir = train(config, out, progress=not args.quiet)
    print(f"run saved in {run_dir} (sample with: inkfuse sample {run_dir} --out samples.png)")


def cmd_demo(args: argparse.Namespace) -> None:
    from inkfuse import pipelines, viz
    from inkfuse.train import train

    overrides = [f"train.max_minutes={args.max_minutes}"] if args.max_minutes else []
    config = config_mod.load_recipe("shapes", overrides + list(args.set))
    out = Path(args.out)
    print(f"training the shapes recipe into {out} (stop any time with Ctrl-C; rerun to resume)")
    train(config, out, progress=not args.quiet)
    run = pipelines.load_run(out)
    images, labels = pipelines.sample_grid(run, progress=not args.quiet)
    viz.save_grid(images, out / "samples.png", nrow=config.sample.per_class, labels=labels)
    frames: list[torch.Tensor] = []
    pipelines.sample(run, len(run.class_names) or 4, guidance=config.sample.guidance,
                     steps=config.sample.steps, progress=False,
                     on_step=lambda i, x, p: frames.append(x.clamp(-1, 1).cpu()))
    viz.save_gif(frames, out / "reverse.gif", nrow=len(frames[0]))
    print(f"wrote {out / 'samples.png'} (one row per class), {out / 'reverse.gif'}, "
          f"{out / 'loss.png'}")


# --- sample ---------------------------------------------------------------------------------

def _prompts(args: argparse.Namespace) -> list[str] | None:
    """--prompt (repeatable) and --prompts-file (one per line; blank lines and # comments
    skipped), in that order; None when neither is given."""
    prompts = list(args.prompt or [])
    if args.prompts_file:
        try:
            lines = Path(args.prompts_file).read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as e:
            raise ConfigError(f"cannot read --prompts-file {args.prompts_file}: {e}") from None
        prompts += [ln.strip() for ln in lines if ln.strip() and not ln.lstrip().startswith("#")]
        if not prompts:
            raise ConfigError(f"--prompts-file {args.prompts_file} has no prompts (one per line)")
    return prompts or None


def cmd_sample(args: argparse.Namespace) -> None:
    """One grid row per (guidance weight, prompt): every row starts from the same noise, so a
    guidance sweep or a list of prompts compares like with like."""
    from inkfuse import pipelines, viz

    out = _out_path(args.out, (".png", ".gif", ".npz"))
    run = pipelines.load_run(args.run_dir, ema=not args.no_ema, compile=args.compile)
    s = run.config.sample
    context = torch.tensor(_floats(args.context)) if args.context else None
    labels = torch.tensor([args.class_id]) if args.class_id is not None else None
    prompts = _prompts(args)
    guidances = _floats(args.guidance) if args.guidance is not None else [s.guidance]
    if not guidances or min(guidances) < 0:
        raise ConfigError(f"--guidance must be numbers >= 0, got {args.guidance!r}")
    rescale = s.guidance_rescale if args.rescale is None else args.rescale
    if not 0 <= rescale <= 1:
        raise ConfigError(f"--rescale must be in [0, 1], got {rescale}")
    jobs = [(w, p) for w in guidances for p in (prompts or [None])]
    if out.suffix == ".gif" and (len(jobs) > 1 or args.n > 64):
        raise ConfigError("a .gif animates one prompt at one guidance weight, at most 64 "
                          "samples: give one of each and lower --n, or write a .png")
    frames: list[torch.Tensor] = []
    options = dict(
        sampler=args.sampler or s.sampler, steps=args.steps or s.steps,
        eta=s.eta if args.eta is None else args.eta, rescale=rescale, seed=args.seed,
        noise=not args.no_noise, progress=True, spacing=args.spacing, churn=args.churn,
        on_step=(lambda i, x, p: frames.append(x.clamp(-1, 1).cpu())) if out.suffix == ".gif"
        else None,
    )
    sr = pipelines.load_run(args.upsample) if args.upsample else None
    if sr is not None and out.suffix == ".gif":
        raise ConfigError("--upsample writes the final images: use a .png or .npz --out")

    def draw(w: float, prompt: str | None) -> torch.Tensor:
        """One row: the run's samples, then (--upsample) the super-resolution run's."""
        prompts = None if prompt is None else [prompt]
        x = pipelines.sample(run, args.n, labels=labels, context=context, prompts=prompts,
                             guidance=w, **options)
        if sr is None:
            return x
        asked = labels if labels is not None else torch.arange(args.n) % max(1, cond_dim)
        return pipelines.upsample(sr, x, labels=asked.expand(args.n), prompts=prompts,
                                  seed=args.seed)

    cond_dim = run.config.model.cond_dim
    images = torch.cat([draw(w, p) for w, p in jobs])
    rows = [" · ".join(filter(None, [f"w={w:g}" if len(guidances) > 1 else "", p or ""]))
            for w, p in jobs]
    class_grid = (len(jobs) == 1 and run.text is None and cond_dim and labels is None
                  and context is None and args.n > cond_dim)
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
        if cond_dim and run.config.data.labels == "class" and context is None:
            one = (labels.expand(args.n) if labels is not None
                   else torch.arange(args.n) % cond_dim).numpy().astype(np.int64)
            arrays["labels"] = np.tile(one, len(jobs))
        from inkfuse.io import atomic_path

        with atomic_path(out) as tmp, open(tmp, "wb") as f:
            np.savez(f, **arrays)
    print(f"wrote {len(images)} samples to {out}")


# --- viz ------------------------------------------------------------------------------------

def _config_of(recipe_or_run: str) -> config_mod.Config:
    path = Path(recipe_or_run)
    if path.is_dir():
        from inkfuse import pipelines

        return pipelines.load_run(path).config
    return config_mod.load_recipe(recipe_or_run)


def cmd_viz(args: argparse.Namespace) -> None:
    from inkfuse import viz
    from inkfuse.diffusion import Schedule

    config = _config_of(args.source)
    dc = config.diffusion
    if args.what == "schedule":
        out = _out_path(args.out, (".png",))
        curves = {}
        for kind in dict.fromkeys([dc.schedule, "linear", "cosine", "sigmoid"]):
            s = Schedule(kind, dc.timesteps, dc.beta_start, dc.beta_end)
            t = torch.arange(dc.timesteps)
            curves[kind] = {"t": t.numpy(), "alphas_cumprod": s.alphas_cumprod.numpy(),
                            "snr": s.snr(t).numpy()}
        viz.plot_schedule(curves, out)
    else:
        from inkfuse.data import build_dataset

        out = _out_path(args.out, (".png", ".gif"))
        data = build_dataset(config_mod.replace(config, data={"limit": args.n}).data)
        s = Schedule(dc.schedule, dc.timesteps, dc.beta_start, dc.beta_end)
        x0 = data.to_float()[: args.n]
        ts = torch.linspace(0, dc.timesteps - 1, args.columns).round().long()
        gen = torch.Generator().manual_seed(args.seed)
        noise = torch.randn(x0.shape, generator=gen)
        noisy = [s.q_sample(x0, t.expand(len(x0)), noise) for t in ts]
        viz.save_forward_strip(x0, noisy, [f"t={t}" for t in ts.tolist()], out)
    print(f"wrote {out}")


# --- data -----------------------------------------------------------------------------------

def cmd_data(args: argparse.Namespace) -> None:
    from inkfuse import data

    if args.what == "list":
        for name, description in data.list_datasets():
            print(f"{name:15s} {description}")
        print(f"data dir: {data.data_dir()} (set INKFUSE_DATA to change)")
    else:
        if not args.name:
            raise ConfigError("usage: inkfuse data fetch NAME (see `inkfuse data list`)")
        print(f"{args.name}: ready in {data.fetch(args.name)}")


# --- parser ---------------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="inkfuse", description="Diffusion models, from a U-Net "
                                "to text-to-image.")
    sub = p.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="train the built-in shapes recipe and draw samples")
    demo.add_argument("--out", default="runs/demo")
    demo.add_argument("--max-minutes", type=float, default=None)
    demo.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    demo.add_argument("--quiet", action="store_true", help="no progress bars")
    demo.set_defaults(fn=cmd_demo)

    tr = sub.add_parser("train", help="train (or resume) a run from a TOML recipe")
    tr.add_argument("recipe", help="recipe file or built-in name (shapes, mnist, ...)")
    tr.add_argument("--out", help="run dir (default runs/<recipe name>)")
    tr.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="override a recipe key, e.g. --set train.steps=200")
    tr.add_argument("--max-minutes", type=float, default=None)
    tr.add_argument("--quiet", action="store_true", help="no progress bars")
    tr.set_defaults(fn=cmd_train)

    sa = sub.add_parser("sample", help="draw images from a trained run")
    sa.add_argument("run_dir")
    sa.add_argument("--n", type=int, default=16, help="samples (per prompt and guidance weight)")
    sa.add_argument("--sampler", default=None,
                    help=f"{', '.join(SAMPLERS)} (default: the recipe's)")
    sa.add_argument("--steps", type=int, default=None)
    sa.add_argument("--spacing", default=None, choices=SPACINGS,
                    help="timestep grid (default: the sampler's own)")
    sa.add_argument("--eta", type=float, default=None, help="DDIM noise: 0 deterministic")
    sa.add_argument("--churn", type=float, default=0.0, help="EDM S_churn (euler, heun)")
    sa.add_argument("--guidance", default=None,
                    help="CFG weight w in eps_u + w (eps_c - eps_u); 1 = no guidance; "
                         "several (0,1,2,4,8) give one row each")
    sa.add_argument("--rescale", type=float, default=None,
                    help="guidance rescale φ in [0, 1] (Lin et al. 2024; default: the recipe's)")
    group = sa.add_mutually_exclusive_group()
    group.add_argument("--class", dest="class_id", type=int, default=None)
    group.add_argument("--context", default=None, help="context vector, e.g. 1,0,0,0.5,0")
    group.add_argument("--prompt", action="append", default=None,
                       help="text prompt (repeat for one row each); mix prompts with "
                            "'a red circle :0.7 | a blue square :0.3'")
    sa.add_argument("--prompts-file", default=None, help="one prompt per line (text models)")
    sa.add_argument("--upsample", default=None, metavar="SR_RUN",
                    help="a super-resolution run that draws the samples again, larger")
    sa.add_argument("--seed", type=int, default=0)
    sa.add_argument("--no-ema", action="store_true", help="use the raw weights, not the EMA")
    sa.add_argument("--compile", action="store_true", help="torch.compile the network (tens of "
                    "seconds of compiling; no faster than eager on the benchmark CPU)")
    sa.add_argument("--no-noise", action="store_true",
                    help="DDPM without fresh noise per step (to see why it is needed)")
    sa.add_argument("--out", required=True, help=".png grid, .gif animation or .npz arrays")
    sa.set_defaults(fn=cmd_sample)

    vz = sub.add_parser("viz", help="pictures of the forward process and the noise schedule")
    vz.add_argument("what", choices=["forward", "schedule"])
    vz.add_argument("source", help="recipe (file or name) or run dir")
    vz.add_argument("--out", required=True)
    vz.add_argument("--n", type=int, default=4, help="images (forward)")
    vz.add_argument("--columns", type=int, default=8, help="noise levels shown (forward)")
    vz.add_argument("--seed", type=int, default=0)
    vz.set_defaults(fn=cmd_viz)

    add_eval_parser(sub)
    add_editing_parsers(sub)
    add_clip_parser(sub)
    add_vae_parser(sub)

    da = sub.add_parser("data", help="list or download datasets")
    da.add_argument("what", choices=["list", "fetch"])
    da.add_argument("name", nargs="?")
    da.set_defaults(fn=cmd_data)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    keep_freed_memory()
    try:
        args.fn(args)
    except InkfuseError as e:
        print(f"inkfuse: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("inkfuse: interrupted; the last checkpoint is kept (run the same command to "
              "resume)", file=sys.stderr)
        return 130
    except OSError as e:
        print(f"inkfuse: error: {e.strerror or e} ({e.filename or 'file system'})",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
