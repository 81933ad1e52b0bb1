"""What LoRA saves against a full DreamBooth fine-tune on this CPU: trainable parameters, the
weights file a fine-tune adds beside its base, seconds per training step, peak memory, and
sampling time after the adapters are merged (it should equal the base's).

    python benchmarks/finetune.py --out benchmarks/results/finetune.md   # trains a tiny base
    python benchmarks/finetune.py --run runs/text --steps 100 --rank 4,16 \\
        --out benchmarks/results/finetune.md

Without --run a tiny text run (a CLIP of a few seconds and a 16 px U-Net, as the tests use) is
trained first, so the whole script takes a few minutes on one thread. The subject is four
renders of one shape ("a yellow cross" by default) at random sizes and places, with prior
preservation on its class ("a cross"). Each fine-tune runs in its own process, on one thread,
so that its peak memory (max RSS, from `wait4`) is its own; that figure includes the Python and
PyTorch baseline, so the table also counts the training state: trainable weights, their
gradients, AdamW's two moments and the EMA, 5 × 4 bytes per trainable parameter.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

RESULTS = Path(__file__).parent / "results"
TINY = ["data.size=16", "data.count=256", "data.labels='text'", "data.max_objects=2",
        "model.base_channels=16", "model.channel_mult=[1, 2]", "model.groups=4",
        "model.attention_resolutions=[8]", "model.head_dim=8", "text.conditioning='both'",
        "diffusion.timesteps=100", "train.steps=20", "train.batch_size=16",
        "train.precision='fp32'", "train.checkpoint_every=20", "sample.steps=10"]
TINY_CLIP = ["data.size=16", "data.count=512", "data.max_objects=2", "clip.eval_count=16",
             "clip.width=32", "clip.layers=1", "clip.heads=2", "clip.embed_dim=32",
             "clip.channels=[8, 16, 32]", "train.steps=20", "train.batch_size=32",
             "train.checkpoint_every=20", "train.warmup_steps=2"]
STATE_BYTES = 5 * 4  # fp32 weight, gradient, AdamW's exp_avg and exp_avg_sq, EMA


def tiny_base(root: Path) -> Path:
    """A text run of seconds: a tiny CLIP, then a tiny U-Net conditioned on it."""
    from inkfuse.config import load_recipe
    from inkfuse.train import train

    clip = train(load_recipe("clip-shapes", TINY_CLIP), root / "clip", progress=False)
    return train(load_recipe("shapes", [*TINY, f"text.encoder='{clip}'"]), root / "base",
                 progress=False)


def subject_folder(root: Path, kind: str, colour: str, size: int, seed: int) -> Path:
    """Four renders of one `colour` `kind` at random sizes and positions, as PNG files."""
    from inkfuse.data.shapes import SIZES, ShapeSpec, render

    rng = np.random.default_rng(seed)
    folder = root / "subject"
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(4):
        spec = ShapeSpec(kind, colour, str(rng.choice(list(SIZES))), float(rng.uniform(0.3, 0.7)),
                         float(rng.uniform(0.3, 0.7)))
        Image.fromarray(render([spec], size).permute(1, 2, 0).numpy()).save(folder / f"{i}.png")
    return folder


def sampling_seconds(run_dir: Path, prompt: str, n: int, steps: int, repeats: int = 3) -> float:
    """Wall time of `n` guided samples in `steps` DDIM steps: the best of `repeats` calls after
    a warm-up (the least disturbed by whatever else the machine runs)."""
    from inkfuse import pipelines

    run = pipelines.load_run(run_dir)
    options = dict(prompts=[prompt], steps=steps, guidance=3.0, progress=False)
    pipelines.sample(run, n, **options)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        pipelines.sample(run, n, **options)
        times.append(time.perf_counter() - t0)
    return min(times)


def child(args: argparse.Namespace) -> None:
    """One fine-tune in this process; prints its measurements as one JSON line."""
    from inkfuse.artifacts import checkpoint
    from inkfuse.artifacts.log import LOG, read_log
    from inkfuse.train import train
    from inkfuse.train.finetune import finetune_recipe

    torch.set_num_threads(1)
    out = Path(args.child_out)
    config = finetune_recipe(args.run, out, args.images, args.prompt,
                             class_prompt=args.class_prompt, class_images=args.class_images,
                             lora=args.child_rank, steps=args.steps,
                             checkpoint_every=args.steps, log_every=1)  # one checkpoint, last
    train(config, out, progress=False)
    ckpt = checkpoint.find(out)
    last = [r for r in read_log(out / LOG) if "loss" in r][-1]
    trainable = sum(t.numel() for t in checkpoint.load_tensors(ckpt / "model.safetensors").values())
    print(json.dumps({
        "trainable": trainable,
        "weights_bytes": (ckpt / "ema.safetensors").stat().st_size,
        "run_bytes": sum(p.stat().st_size for p in out.rglob("*") if p.is_file()),
        "seconds_per_step": last["seconds"] / last["step"],
        "sample_seconds": sampling_seconds(out, args.prompt, args.sample_n, args.sample_steps),
    }))


def measure(args: argparse.Namespace, rank: int, out: Path) -> dict:
    """Run one fine-tune (rank 0: every weight) in a child process; its numbers and max RSS."""
    cmd = [sys.executable, __file__, "--child-out", str(out), "--child-rank", str(rank),
           "--run", str(args.run), "--images", str(args.images), "--prompt", args.prompt,
           "--class-prompt", args.class_prompt, "--class-images", str(args.class_images),
           "--steps", str(args.steps), "--sample-n", str(args.sample_n),
           "--sample-steps", str(args.sample_steps)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, env=env, text=True)
    stdout = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    if status != 0:
        raise SystemExit(f"the rank-{rank} fine-tune failed (exit status {status >> 8})")
    return json.loads(stdout.strip().splitlines()[-1]) | {"max_rss": usage.ru_maxrss * 1024}


def table(args: argparse.Namespace, rows: list[tuple[str, dict]], base_sample: float) -> str:
    full = rows[0][1]
    mib = 1024 * 1024
    lines = [
        f"# LoRA against a full fine-tune ({args.steps} steps, batch 4 + 4 class images, "
        "one CPU thread)", "",
        f"Base run: {args.base_name}; subject: 4 images, prompt {args.prompt!r}, class prompt "
        f"{args.class_prompt!r} ({args.class_images} class images). `python "
        "benchmarks/finetune.py` wrote this.", "",
        "| fine-tune | trainable params | weights file | run dir | s / step | peak RSS | "
        "training state | sampling s |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, r in rows:
        lines.append(
            f"| {name} | {r['trainable']:,} ({r['trainable'] / full['trainable']:.1%}) | "
            f"{r['weights_bytes'] / 1024:,.0f} KiB | {r['run_bytes'] / mib:.2f} MiB | "
            f"{r['seconds_per_step']:.3f} ({r['seconds_per_step'] / full['seconds_per_step']:.2f}×)"
            f" | {r['max_rss'] / mib:,.0f} MiB | {r['trainable'] * STATE_BYTES / mib:.2f} MiB | "
            f"{r['sample_seconds']:.2f} |")
    lines += ["", f"Sampling the base itself: {base_sample:.2f} s ({args.sample_n} samples, "
              f"{args.sample_steps} DDIM steps with guidance). The weights file is what a "
              "fine-tune adds beside its base (checkpoint/ema.safetensors: the whole U-Net, or "
              "the adapters alone); the run dir also holds the optimizer state, the class "
              "images and, for a full fine-tune, copies of the base's CLIP. Training state: "
              f"{STATE_BYTES} bytes per trainable parameter (weight, gradient, AdamW's two "
              "moments, EMA); peak RSS includes the Python and PyTorch baseline and the "
              "activations, which LoRA does not shrink.", ""]
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--run", default=None, help="text run to fine-tune (default: a tiny one)")
    p.add_argument("--prompt", default="a yellow cross")
    p.add_argument("--class-prompt", default="a cross")
    p.add_argument("--class-images", type=int, default=8)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--rank", default="4", help="LoRA ranks, comma-separated")
    p.add_argument("--sample-n", type=int, default=8)
    p.add_argument("--sample-steps", type=int, default=10)
    p.add_argument("--images", default=None, help="subject folder (default: rendered)")
    p.add_argument("--out", default=str(RESULTS / "finetune.md"))
    p.add_argument("--child-out", default=None, help=argparse.SUPPRESS)
    p.add_argument("--child-rank", type=int, default=0, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child_out:
        return child(args)
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory(prefix="inkfuse-finetune-") as tmp:
        root = Path(tmp)
        args.base_name = f"`{args.run}`" if args.run else "a tiny text run trained first"
        if args.run is None:
            print("training a tiny text run to fine-tune ...", flush=True)
            args.run = tiny_base(root)
        if args.images is None:
            from inkfuse.artifacts.run import read_config

            size = read_config(Path(args.run))[0].data.size
            colour, kind = args.prompt.split()[-2:]
            args.images = subject_folder(root, kind, colour, size, seed=0)
        rows = []
        for rank in [0, *(int(r) for r in args.rank.split(","))]:
            name = "full" if rank == 0 else f"LoRA r={rank}"
            print(f"fine-tuning: {name} ...", flush=True)
            rows.append((name, measure(args, rank, root / name.replace(" ", "-"))))
        base_sample = sampling_seconds(Path(args.run), args.prompt, args.sample_n,
                                       args.sample_steps)
        text = table(args, rows, base_sample)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(text)
    print(text)


if __name__ == "__main__":
    main()
