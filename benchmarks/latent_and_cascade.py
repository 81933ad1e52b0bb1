"""Two routes to larger images, each against a plain pixel model under the same training budget.

    python benchmarks/latent_and_cascade.py latent --minutes 5    # Fashion-MNIST, 28 px
    python benchmarks/latent_and_cascade.py cascade --minutes 6   # shapes, 64 px (--size 32)

latent: the `fashion-mnist` recipe (pixels) against `fashion-mnist-latent` (the U-Net on a
frozen VAE's 4 x 8 x 8 latents, decoded after sampling); the VAE is trained first if
runs/vae-fashion-mnist is missing, and its time is reported apart. Quality: the Fréchet
distance in the Fashion-MNIST classifier's feature space and the accuracy of the asked class.

cascade: one class-conditional 64 px model against a 16 px base model (half the budget) followed
by the 16 -> 64 super-resolution model (`shapes-sr`, the other half). Quality: Inception FID
against real 64 px shapes and the shapes checker's accuracy of the asked kind.

Every model trains for `--minutes` of wall clock (the cascade's two share it); images/s is the
training throughput, s/image the time to draw one final image. Writes results/latent.md or
results/cascade.md.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

import inkfuse
from inkfuse import pipelines, viz
from inkfuse.artifacts.checkpoint import read_json
from inkfuse.metrics.evaluation import evaluate_images

RESULTS = Path(__file__).parent / "results"
RUNS = Path("runs/bench")


REUSE = False  # --reuse: score runs trained by an earlier call instead of training more


def train(recipe: str, out: Path, minutes: float, overrides: list[str] = ()) -> Path:
    """Train `recipe` for `minutes` of wall clock (however many steps fit) into `out`."""
    if REUSE and (out / "checkpoint").is_dir():
        return out
    config = inkfuse.load_recipe(recipe, ["train.steps=1000000", f"train.max_minutes={minutes}",
                                          "train.checkpoint_every=1000000", *overrides])
    return inkfuse.train(config, out)


def throughput(run_dir: Path) -> tuple[int, float]:
    """(steps, images/s) from the last line of the run's log."""
    last = json.loads((run_dir / "log.jsonl").read_text().splitlines()[-1])
    return last["step"], last["images_per_s"]


def timed(fn, *args, **kwargs) -> tuple[torch.Tensor, float]:
    t0 = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - t0


def latent(args: argparse.Namespace) -> list[str]:
    vae_dir = Path("runs/vae-fashion-mnist")
    vae_note = f"the VAE in {vae_dir} (trained earlier)"
    if not (vae_dir / "vae.json").is_file():
        t0 = time.perf_counter()
        inkfuse.train(inkfuse.load_recipe("vae-fashion-mnist", kind="vae"), vae_dir)
        metrics = read_json(vae_dir / "vae.json")["metrics"]
        vae_note = (f"the VAE ({(time.perf_counter() - t0) / 60:.1f} min, held-out PSNR "
                    f"{metrics['psnr']:.1f} dB, SSIM {metrics['ssim']:.3f})")
    runs = {"pixels (`fashion-mnist`)": train("fashion-mnist", RUNS / "fm-pixels", args.minutes),
            "latents (`fashion-mnist-latent`)": train(
                "fashion-mnist-latent", RUNS / "fm-latent", args.minutes,
                [f"data.vae='{vae_dir}'"])}
    lines = [f"# Pixel vs latent diffusion: Fashion-MNIST, {args.minutes:g} min each", "",
             f"Latent run on {vae_note}. {args.n} class-balanced samples, DDIM 50, CFG w = 3.",
             "", "| model | U-Net input | steps | train img/s | s/image | fd_cls | accuracy |",
             "|---|---|---:|---:|---:|---:|---:|"]
    labels = torch.arange(args.n) % 10
    for name, run_dir in runs.items():
        run = pipelines.load_run(run_dir)
        images, seconds = timed(pipelines.sample, run, args.n, labels=labels, steps=50,
                                guidance=3.0, progress=False)
        scores = evaluate_images(images, labels, run.config.data, ["fd_cls", "accuracy"],
                                 progress=False)
        steps, rate = throughput(run_dir)
        shape = "x".join(map(str, run.shape))
        lines.append(f"| {name} | {shape} | {steps} | {rate:.0f} | {seconds / args.n:.4f} | "
                     f"{scores['fd_cls']:.2f} | {100 * scores['accuracy']:.1f}% |")
        print(lines[-1], flush=True)
    return lines


def cascade(args: argparse.Namespace) -> list[str]:
    half, size = args.minutes / 2, args.size
    single = train("shapes", RUNS / f"shapes-{size}", args.minutes,
                   [f"data.size={size}", "model.channel_mult=[1, 2, 2, 2]",
                    "train.batch_size=32"])
    base = train("shapes", RUNS / "shapes-16", half)
    sr = train("shapes-sr", RUNS / f"shapes-sr-{size}", half, [f"data.size={size}"])
    labels = torch.arange(args.n) % 4
    run64, run16, run_sr = (pipelines.load_run(d) for d in (single, base, sr))
    big, t_single = timed(pipelines.sample, run64, args.n, labels=labels, steps=50,
                          guidance=3.0, progress=False)
    small, t_base = timed(pipelines.sample, run16, args.n, labels=labels, steps=50,
                          guidance=3.0, progress=False)
    chained, t_sr = timed(pipelines.upsample, run_sr, small, labels=labels,
                          progress=False)
    lines = [f"# Cascade vs one model: {size} px shapes, {args.minutes:g} min of training each",
             "",
             f"{args.n} class-balanced samples; single and base: DDIM 50, CFG w = 3; "
             f"upsampler: DDIM {run_sr.config.sample.steps}, low-res noise "
             f"{run_sr.config.sample.low_res_noise:g}·T.", "",
             "| route | steps | train img/s | s/image | FID | kind accuracy |",
             "|---|---|---:|---:|---:|---:|"]
    for name, images, seconds, dirs in (
            (f"one {size} px model", big, t_single, [single]),
            (f"16 px base + 16->{size} upsampler", chained, t_base + t_sr, [base, sr])):
        scores = evaluate_images(images, labels, run64.config.data, args.metrics,
                                 progress=False)
        stats = [throughput(d) for d in dirs]
        steps = " + ".join(str(s) for s, _ in stats)
        rates = " + ".join(f"{r:.0f}" for _, r in stats)
        fid = f"{scores['fid']:.1f}" if "fid" in scores else "–"
        lines.append(f"| {name} | {steps} | {rates} | {seconds / args.n:.4f} | "
                     f"{fid} | {100 * scores['accuracy']:.1f}% |")
        print(lines[-1], flush=True)
    viz.save_grid(torch.cat([big[:8], chained[:8]]), RESULTS / "cascade.png", nrow=8,
                  labels=[f"one {size} px model", "base + upsampler"])
    return [*lines, "", "![one model (top) vs cascade (bottom)](cascade.png)"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("what", choices=["latent", "cascade"])
    p.add_argument("--minutes", type=float, default=5.0, help="training budget per model")
    p.add_argument("--n", type=int, default=500, help="samples scored per model")
    p.add_argument("--size", type=int, default=64, help="cascade: the final size (32 or 64)")
    p.add_argument("--metrics", type=lambda t: t.split(","), default=["fid", "accuracy"],
                   help="cascade: fid,accuracy (FID's reference statistics take long on a CPU)")
    p.add_argument("--reuse", action="store_true", help="score the runs of an earlier call")
    args = p.parse_args()
    global REUSE
    REUSE = args.reuse
    lines = latent(args) if args.what == "latent" else cascade(args)
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"{args.what}.md"
    out.write_text("\n".join([*lines, "", f"Command: `python benchmarks/latent_and_cascade.py "
                                           f"{args.what} --minutes {args.minutes:g} "
                                           f"--n {args.n} --size {args.size}`", ""]))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
