"""Bits per dimension of trained runs on their test sets, both estimators side by side.

    python benchmarks/likelihood.py runs/mnist runs/fashion-mnist --n 1000
    python benchmarks/likelihood.py runs/mnist-2min runs/mnist-5min runs/mnist --n 1000

Trains nothing: scores the given run dirs with `inkfuse.metrics.likelihood` (the variational
bound with importance-sampled steps, and the probability-flow ODE with Hutchinson's trace), each
as the mean over n test images ± its standard error, and writes results/likelihood.md. Runs of
one dataset at different training lengths also give results/likelihood.png, bpd against
training time. "agree" tests |ODE − VLB| ≤ 2 sqrt(se_vlb² + se_ode²); the two are not the
same quantity (see the note written under the table), so a gap beyond it is the models', not
the estimators' noise. The ODE costs 4 network calls and backward passes per step (rk4): on a
2-core CPU, 1,000 MNIST images at 32 steps take tens of minutes; a GPU (`--device cuda`) takes
a minute.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import torch

from inkfuse import pipelines, viz
from inkfuse.artifacts.checkpoint import find, read_json
from inkfuse.metrics.likelihood import run_bpd

RESULTS = Path(__file__).parent / "results"
NOTE = """\
The bound (VLB) is Ho et al.'s L_prior + Σ L_k + L_dec of the model's stochastic reverse
process with the fixed variance named (`posterior` = β̃, what the `ddpm` sampler draws with); it
is an upper bound on −log₂ P of the 8-bit image. The ODE number is the likelihood of the
deterministic probability-flow model (the same network read as a flow), on uniformly
dequantised pixels in the same 2/255 bins, so it too bounds −log₂ P; its error bar holds the
Hutchinson and dequantisation noise, not the fixed-step integration error. The two score
different models built from one network, and agree only as far as the network's score is
exact. A latent run's numbers are bits per dimension of its scaled VAE latents (continuous,
can be negative), not of pixels, and do not compare with the pixel rows."""


def training(run_dir: Path) -> tuple[int, float | None]:
    """(optimizer steps, training minutes) from the run's log, else its checkpoint."""
    log = run_dir / "log.jsonl"
    if log.is_file():
        lines = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
        for record in reversed(lines):
            if "step" in record:
                seconds = record.get("train_seconds", record.get("seconds"))
                return int(record["step"]), None if seconds is None else seconds / 60
    ckpt = find(run_dir)
    state = read_json(ckpt / "state.json") if ckpt is not None else {}
    return int(state.get("step", 0)), None


def score(run_dir: Path, args: argparse.Namespace) -> dict:
    """Both estimators on one run, each timed on its own."""
    run = pipelines.load_run(run_dir, device=args.device)
    row: dict = {"run": str(run_dir), "dataset": run.config.data.name}
    row["steps"], row["minutes"] = training(run_dir)
    common = {"seed": args.seed, "batch_size": args.batch_size, "t_samples": args.t_samples,
              "ode_steps": args.ode_steps, "solver": args.solver, "variance": args.variance}
    for estimator in ("vlb", "ode"):
        t0 = time.perf_counter()
        row |= run_bpd(run, args.n, estimators=(estimator,), **common)
        row[f"{estimator}_seconds"] = time.perf_counter() - t0
    return row


def table(rows: list[dict], args: argparse.Namespace) -> list[str]:
    lines = [
        f"# Bits per dimension on the test sets ({args.n} images per run)", "",
        f"VLB: {args.t_samples} importance-sampled steps per image, `{args.variance}` variance. "
        f"ODE: {args.ode_steps} {args.solver} steps in log σ, one Rademacher probe per image. "
        f"Device: {args.device}.", "",
        "| run | data | space | train steps | train min | VLB bpd | prior / decoder / "
        "diffusion | ODE bpd | ODE − VLB | agree | VLB s | ODE s |",
        "|---|---|---|---:|---:|---:|---|---:|---:|---|---:|---:|",
    ]
    for r in rows:
        diff = r["bpd_ode"] - r["bpd_vlb"]
        se = math.hypot(r["bpd_vlb_se"], r["bpd_ode_se"])
        minutes = "" if r["minutes"] is None else f"{r['minutes']:.1f}"
        parts = " / ".join(f"{r[f'bpd_vlb_{p}']:.3f}" for p in ("prior", "decoder", "diffusion"))
        lines.append(
            f"| {Path(r['run']).name} | {r['dataset']} | {r['bpd_space']} | {r['steps']} | "
            f"{minutes} | {r['bpd_vlb']:.3f} ± {r['bpd_vlb_se']:.3f} | {parts} | "
            f"{r['bpd_ode']:.3f} ± {r['bpd_ode_se']:.3f} | {diff:+.3f} ± {se:.3f} | "
            f"{'yes' if abs(diff) <= 2 * se else 'no'} | {r['vlb_seconds']:.0f} | "
            f"{r['ode_seconds']:.0f} |")
    return [*lines, "", NOTE]


def plot(rows: list[dict], path: Path) -> bool:
    """bpd against training minutes, a line per dataset and estimator, where a dataset has
    runs at two or more training lengths."""
    series = {}
    for name in sorted({r["dataset"] for r in rows}):
        mine = sorted((r for r in rows if r["dataset"] == name and r["minutes"] is not None),
                      key=lambda r: r["minutes"])
        if len(mine) >= 2:
            for estimator in ("vlb", "ode"):
                series[f"{name} {estimator}"] = ([r["minutes"] for r in mine],
                                                 [r[f"bpd_{estimator}"] for r in mine])
    if series:
        viz.plot_lines(series, path, "training minutes", "bits/dim (test)",
                       "likelihood against training time")
    return bool(series)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("runs", nargs="+", type=Path, help="run dirs to score")
    p.add_argument("--n", type=int, default=1000, help="test images per run")
    p.add_argument("--t-samples", type=int, default=8)
    p.add_argument("--ode-steps", type=int, default=32)
    p.add_argument("--solver", default="rk4", choices=["rk4", "heun"])
    p.add_argument("--variance", default="posterior", choices=["posterior", "beta"])
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--out", type=Path, default=RESULTS / "likelihood.md")
    args = p.parse_args()
    rows = []
    for run_dir in args.runs:
        rows.append(score(run_dir, args))
        r = rows[-1]
        print(f"{run_dir}: vlb {r['bpd_vlb']:.3f} ± {r['bpd_vlb_se']:.3f}, "
              f"ode {r['bpd_ode']:.3f} ± {r['bpd_ode_se']:.3f}", flush=True)
    lines = table(rows, args)
    picture = args.out.with_suffix(".png")
    if plot(rows, picture):
        lines += ["", f"![bpd against training time]({picture.name})"]
    command = " ".join(["python benchmarks/likelihood.py", *map(str, args.runs),
                        f"--n {args.n}", f"--t-samples {args.t_samples}",
                        f"--ode-steps {args.ode_steps}", f"--solver {args.solver}",
                        f"--variance {args.variance}"])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join([*lines, "", f"Command: `{command}`", ""]))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
