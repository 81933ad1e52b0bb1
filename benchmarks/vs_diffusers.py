"""inkfuse against Hugging Face diffusers on the same machine: training and sampling throughput
at matched parameter count, time to quality on Fashion-MNIST, and how close each gets to the
hardware (FLOPs, utilisation against a matmul peak measured in the same run, a profile).

    python benchmarks/vs_diffusers.py throughput          # A/B at 16, 28 and 64 px
    python benchmarks/vs_diffusers.py hardware            # FLOPs, MFU and profile at 64 px
    python benchmarks/vs_diffusers.py levers --size 64    # our fast paths against our defaults
    python benchmarks/vs_diffusers.py quality --minutes 10
    python benchmarks/vs_diffusers.py all                 # all four (`make bench`)
    python benchmarks/vs_diffusers.py all --quick         # ~10 minutes, to check it runs

Ours runs with its recipe settings (bf16 autocast, fused AdamW, grad clipping, EMA); theirs
as diffusers' examples/unconditional_image_generation/train_unconditional.py trains: fp32
(`--mixed_precision no`), AdamW(lr 1e-4, betas (0.95, 0.999), wd 1e-6), cosine schedule with 500
warm-up steps, grad clipping, EMAModel (power 3/4, max decay 0.9999), ε-MSE with DDPMScheduler
(1000 linear steps); `diffusers-bf16` is the same with bf16 autocast. Its UNet2DModel follows
the example's layout (layers_per_block 2, widths (w, w, 2w, ...), attention at one low-resolution
level) scaled to our recipe model's parameter count. Both models are class-conditional (ours:
one-hot → linear; theirs: `num_class_embeds`, one extra id as the null class) with 10% label
dropout, so both learn the same task and are sampled the same way (DDIM, CFG).
Needs the `bench` extra: pip install -e '.[bench]'. Writes results/vs_diffusers_<part>.md
(not with --quick).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import time
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import diffusers
import torch
import torch.nn.functional as F
from diffusers import DDIMScheduler, DDPMScheduler, UNet2DModel
from diffusers.optimization import get_scheduler
from diffusers.training_utils import EMAModel
from throughput import RESULTS, matmul_peak
from torch import Tensor, nn
from torch.profiler import ProfilerActivity, profile, record_function
from torch.utils.data import DataLoader, TensorDataset
from torch.utils.flop_counter import FlopCounterMode

import inkfuse
from inkfuse.config import Config, load_recipe, replace
from inkfuse.data import build_dataset
from inkfuse.diffusion import Condition, Denoiser, Schedule
from inkfuse.metrics.evaluation import evaluate, evaluate_images
from inkfuse.nn import build_model
from inkfuse.runtime import keep_freed_memory, resolve_precision
from inkfuse.train.ema import EMA
from inkfuse.train.loop import apply_update, make_optimizer

CLASSES = 10
# image size -> our recipe and its overrides, image channels, diffusers' block_out_channels
# (chosen so that both parameter counts agree within 5%).
SIZES = {
    16: ("shapes", [], 3, (32, 32, 64)),
    28: ("fashion-mnist", [], 1, (32, 32, 64)),
    64: ("shapes", ["data.size=64", "model.channel_mult=[1, 2, 2, 2]"], 3, (32, 32, 64, 64)),
}
LEVERS = {  # --set overrides of our recipe, A/B against our defaults (bf16, eager, contiguous)
    "fp32": ["train.precision='fp32'"],
    "bf16 + channels_last": ["train.channels_last=true"],
    "bf16 + compile": ["train.compile=true"],
    "bf16 + compile + channels_last": ["train.compile=true", "train.channels_last=true"],
}


@dataclass
class Contender:
    name: str
    net: nn.Module
    batch: int
    train_step: Callable[[], None]  # forward + backward + clip + AdamW + EMA on a fixed batch
    evaluate: Callable[[], None]  # one network evaluation of `sample_batch` images

    @property
    def params(self) -> int:
        return count(self.net)


def count(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


def recipe(size: int, sets: Sequence[str] = ()) -> Config:
    name, overrides, channels, _ = SIZES[size]
    config = load_recipe(name, [*overrides, *sets])
    return replace(config, model={"in_channels": channels, "cond_dim": CLASSES})


def ours(size: int, device: str, sample_batch: int, sets: Sequence[str] = (),
         name: str = "inkfuse", fused_adamw: bool = True) -> Contender:
    """Our U-Net, trained as `inkfuse.train.loop` trains it (recipe settings + `sets`)."""
    config = recipe(size, sets)
    tc, channels = config.train, config.model.in_channels
    net = build_model(config.model, size, config.diffusion.timesteps).to(device)
    memory = torch.channels_last if tc.channels_last else torch.contiguous_format
    net = net.to(memory_format=memory)
    forward = torch.compile(net) if tc.compile else net
    opt = make_optimizer(net.parameters(), tc, fused=fused_adamw)
    ema = EMA(net, tc.ema_decay)
    d = config.diffusion
    schedule = Schedule.of(d)
    denoiser = Denoiser(forward, schedule, d.target)
    bf16 = resolve_precision(tc.precision, device) == "bf16"
    autocast = torch.autocast(device, dtype=torch.bfloat16, enabled=bf16)
    x0 = torch.randn(tc.batch_size, channels, size, size, device=device)
    x0 = x0.contiguous(memory_format=memory)
    cond = Condition.from_labels(torch.arange(tc.batch_size, device=device) % CLASSES, CLASSES)
    xs = torch.randn(sample_batch, channels, size, size, device=device)
    xs = xs.contiguous(memory_format=memory)
    ts = torch.randint(0, d.timesteps, (sample_batch,), device=device)
    cs = Condition.from_labels(torch.arange(sample_batch, device=device) % CLASSES, CLASSES)
    steps = 0

    def train_step() -> None:
        nonlocal steps
        with record_function("forward"), autocast:
            loss = denoiser.loss(x0, cond.dropped(d.cond_drop_prob))
        with record_function("backward"):
            loss.backward()
        with record_function("optimizer"):
            apply_update(net, opt, ema, tc, steps)
        loss.item()
        steps += 1

    @torch.inference_mode()
    def evaluate() -> None:
        with autocast:
            forward(xs, ts, **cs.inputs())

    return Contender(name, net, tc.batch_size, train_step, evaluate)


def diffusers_unet(size: int) -> UNet2DModel:
    """train_unconditional.py's UNet2DModel, scaled down: attention at the lowest level."""
    _, _, channels, widths = SIZES[size]
    n = len(widths)
    return UNet2DModel(sample_size=size, in_channels=channels, out_channels=channels,
                       layers_per_block=2, block_out_channels=widths,
                       down_block_types=("DownBlock2D",) * (n - 1) + ("AttnDownBlock2D",),
                       up_block_types=("AttnUpBlock2D",) + ("UpBlock2D",) * (n - 1),
                       num_class_embeds=CLASSES + 1)  # the last id is the null class of CFG


def diffusers_trainer(net: UNet2DModel, device: str, bf16: bool,
                      total_steps: int) -> tuple[Callable[[Tensor, Tensor], float], EMAModel]:
    """One training step of train_unconditional.py (see the module doc) on a given batch, and
    the EMA of the weights that it updates."""
    scheduler = DDPMScheduler(num_train_timesteps=1000)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-4, betas=(0.95, 0.999), weight_decay=1e-6,
                            eps=1e-8)
    lr_scheduler = get_scheduler("cosine", optimizer=opt, num_warmup_steps=500,
                                 num_training_steps=total_steps)
    ema = EMAModel(net.parameters(), decay=0.9999, use_ema_warmup=True, inv_gamma=1.0,
                       power=3 / 4)
    autocast = torch.autocast(device, dtype=torch.bfloat16, enabled=bf16)

    def step(x0: Tensor, labels: Tensor) -> float:
        with record_function("forward"):
            noise = torch.randn(x0.shape, device=device)
            t = torch.randint(0, 1000, (len(x0),), device=device)
            noisy = scheduler.add_noise(x0, noise, t)
            labels = torch.where(torch.rand(len(x0), device=device) < 0.1, CLASSES, labels)
            with autocast:
                out = net(noisy, t, class_labels=labels).sample
            loss = F.mse_loss(out.float(), noise.float())
        with record_function("backward"):
            loss.backward()
        with record_function("optimizer"):
            nn.utils.clip_grad_norm_(net.parameters(), 1.0)
            opt.step()
            lr_scheduler.step()
            ema.step(net.parameters())
            opt.zero_grad(set_to_none=True)
        return loss.item()

    return step, ema


def theirs(size: int, device: str, sample_batch: int, bf16: bool = False) -> Contender:
    """diffusers' UNet2DModel at our recipe's batch size, trained as its example trains."""
    batch, channels = recipe(size).train.batch_size, SIZES[size][2]
    net = diffusers_unet(size).to(device)
    step, _ = diffusers_trainer(net, device, bf16, total_steps=10**6)
    x0 = torch.randn(batch, channels, size, size, device=device)
    labels = torch.arange(batch, device=device) % CLASSES
    xs = torch.randn(sample_batch, channels, size, size, device=device)
    ts = torch.randint(0, 1000, (sample_batch,), device=device)
    ys = torch.arange(sample_batch, device=device) % CLASSES
    autocast = torch.autocast(device, dtype=torch.bfloat16, enabled=bf16)

    @torch.inference_mode()
    def evaluate() -> None:
        with autocast:
            net(xs, ts, class_labels=ys)

    return Contender("diffusers-bf16" if bf16 else "diffusers", net, batch,
                     lambda: step(x0, labels), evaluate)


def flops_per_image(c: Contender) -> float:
    """Counted FLOPs of forward + backward per training image (matmuls, convs, attention)."""
    with FlopCounterMode(display=False) as counter:
        c.train_step()
    return counter.get_total_flops() / c.batch


def rate(fn: Callable[[], None], images: int, seconds: float, device: str) -> float:
    """Images/s of `fn` over at least `seconds` and two calls."""
    if device == "cuda":
        torch.cuda.synchronize()
    calls, t0 = 0, time.perf_counter()
    while calls < 2 or time.perf_counter() - t0 < seconds:
        fn()
        calls += 1
    if device == "cuda":
        torch.cuda.synchronize()
    return calls * images / (time.perf_counter() - t0)


def ab(contenders: list[Contender], args: argparse.Namespace) -> dict[str, dict[str, float]]:
    """Median training and sampling images/s of each contender, and of each one's ratio to the
    first, measured in alternating order (ABC, CBA, ...) so drifts in machine load hit all."""
    for c in contenders:  # warm-up (and compilation)
        for _ in range(args.warmup):
            c.train_step()
            c.evaluate()
    runs = defaultdict(list)
    for r in range(args.rounds):
        for c in contenders if r % 2 == 0 else contenders[::-1]:
            runs[c.name, "train"].append(rate(c.train_step, c.batch, args.seconds, args.device))
            runs[c.name, "sample"].append(rate(c.evaluate, args.sample_batch, args.seconds,
                                               args.device))
            print(f"  round {r + 1}: {c.name}: train {runs[c.name, 'train'][-1]:.1f} img/s, "
                  f"sample {runs[c.name, 'sample'][-1]:.1f} img/s", flush=True)
    first = contenders[0].name
    return {c.name: {
        **{k: statistics.median(runs[c.name, k]) for k in ("train", "sample")},
        **{f"{k}_ratio": statistics.median(a / b for a, b in zip(runs[first, k], runs[c.name, k],
                                                                  strict=True))
           for k in ("train", "sample")},
    } for c in contenders}


def header(title: str, args: argparse.Namespace) -> list[str]:
    device = (torch.cuda.get_device_name() if args.device == "cuda"
              else platform.processor() or platform.machine())
    return [f"# {title}", "",
            f"{device}, {torch.get_num_threads()} threads, torch {torch.__version__}, diffusers "
            f"{diffusers.__version__}; load average at start {os.getloadavg()[0]:.2f}; glibc "
            + ("malloc defaults." if args.default_malloc else "malloc keeping freed memory "
               "(`inkfuse.runtime.keep_freed_memory`, for both)."), ""]


def write(part: str, lines: list[str], args: argparse.Namespace) -> None:
    """Print the table; write it to results/ unless this is a --quick smoke run."""
    print("\n".join(lines), flush=True)
    if not args.quick:
        suffix = ("" if args.device == "cpu" else f"-{args.device}") + (
            "-default-malloc" if args.default_malloc else "")
        RESULTS.mkdir(exist_ok=True)
        (RESULTS / f"vs_diffusers_{part}{suffix}.md").write_text("\n".join(lines) + "\n")


def part_throughput(args: argparse.Namespace) -> None:
    lines = [*header("Throughput: inkfuse vs diffusers at matched parameter count", args),
        f"Median of {args.rounds} alternating rounds of ≥ {args.seconds:g} s each; the ratio is "
        "the median of per-round ratios (ours ÷ theirs, > 1 = ours faster). Training: forward + "
        "backward + grad clipping + AdamW + EMA at our recipe's batch; sampling: one network "
        f"evaluation of {args.sample_batch} images (inference mode).", "",
        "| size | model | params | GFLOP/image (fwd+bwd) | batch | train img/s | ours ÷ this "
        "| sample img/s per NFE | ours ÷ this |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for size in args.sizes:
        cs = [ours(size, args.device, args.sample_batch),
              theirs(size, args.device, args.sample_batch),
              theirs(size, args.device, args.sample_batch, bf16=True)]
        assert abs(cs[1].params / cs[0].params - 1) < 0.1, "parameter counts differ by > 10%"
        flops = {c.name: flops_per_image(c) for c in cs}
        res = ab(cs, args)
        for c in cs:
            r = res[c.name]
            lines.append(f"| {size}×{size}×{SIZES[size][2]} | {c.name} | {c.params / 1e6:.2f} M "
                         f"| {flops[c.name] / 1e9:.3f} | {c.batch} | {r['train']:.1f} "
                         f"| {r['train_ratio']:.2f}× | {r['sample']:.1f} "
                         f"| {r['sample_ratio']:.2f}× |")
            print(lines[-1], flush=True)
    write("throughput", lines, args)


def part_levers(args: argparse.Namespace) -> None:
    size = args.size
    cs = [ours(size, args.device, args.sample_batch, name="defaults (bf16, eager)")]
    cs += [ours(size, args.device, args.sample_batch, sets, name) for name, sets in LEVERS.items()]
    cs += [ours(size, args.device, args.sample_batch, name="foreach AdamW, not fused",
                fused_adamw=False)]
    res = ab(cs, args)
    lines = [*header(f"Levers on our {size} px model (batch {cs[0].batch})", args),
        f"Median of {args.rounds} alternating rounds; the ratio is this lever over our defaults "
        "(> 1 = the lever is faster).", "",
        "| setting | train img/s | × defaults | sample img/s per NFE | × defaults |",
        "|---|---:|---:|---:|---:|",
    ]
    lines += [f"| {c.name} | {res[c.name]['train']:.1f} | {1 / res[c.name]['train_ratio']:.2f}× "
              f"| {res[c.name]['sample']:.1f} | {1 / res[c.name]['sample_ratio']:.2f}× |"
              for c in cs]
    write(f"levers_{size}", lines, args)


OVERHEAD, OTHER, OPTIMIZER = ("autograd and Python overhead", "other ops (elementwise, cat, ...)",
                              "optimizer (clip, AdamW, EMA)")
CATEGORIES = {  # op name fragments -> bucket; the first that matches wins
    "convolutions": ("conv",),
    "norms": ("group_norm", "batch_norm", "layer_norm"),
    "attention": ("scaled_dot_product", "attention", "softmax", "bmm"),
    "linear (embeddings, FiLM)": ("addmm", "aten::mm", "linear", "matmul"),
    "casts and copies": ("aten::to", "_to_copy", "copy_", "clone", "contiguous"),
}


def breakdown(c: Contender, steps: int) -> dict[str, float]:
    """Share of one training step's CPU time per bucket: ops in forward + backward by kind,
    the optimizer phase (clipping, AdamW, EMA) whole, and the time between ops (overhead)."""
    c.train_step()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            c.train_step()
    total, buckets = 0.0, dict.fromkeys([*CATEGORIES, OTHER, OPTIMIZER, OVERHEAD], 0.0)
    for e in prof.events():
        top = e
        while top.cpu_parent is not None:
            top = top.cpu_parent
        if e is top:
            total += e.cpu_time_total
        if top.name == "optimizer":
            buckets[OPTIMIZER] += e.self_cpu_time_total
        elif not e.name.startswith("aten::"):
            buckets[OVERHEAD] += e.self_cpu_time_total
        else:
            kind = next((k for k, frags in CATEGORIES.items() if any(f in e.name for f in frags)),
                        OTHER)
            buckets[kind] += e.self_cpu_time_total
    return {"ms per step": total / steps / 1e3} | {k: v / total for k, v in buckets.items()}


def part_hardware(args: argparse.Namespace) -> None:
    size = args.size
    peaks = {p: matmul_peak(dtype, args.device) for p, dtype in
             (("fp32", torch.float32), ("bf16", torch.bfloat16))}
    cs = [ours(size, args.device, args.sample_batch, name="inkfuse bf16"),
          ours(size, args.device, args.sample_batch, ["train.precision='fp32'"], "inkfuse fp32"),
          theirs(size, args.device, args.sample_batch),
          theirs(size, args.device, args.sample_batch, bf16=True)]
    flops = {c.name: flops_per_image(c) for c in cs}
    res = ab(cs, args)
    lines = [
        *header(f"Close to the hardware: the {size} px models, batch {cs[0].batch}", args),
        f"Matmul peak measured in this run (2048² matmul): fp32 {peaks['fp32'] / 1e9:.0f} "
        f"GFLOP/s, bf16 {peaks['bf16'] / 1e9:.0f} GFLOP/s. FLOPs counted with "
        "torch.utils.flop_counter (matmuls, convolutions, attention; forward + backward); "
        "utilisation = counted FLOPs × images/s ÷ the peak of the precision used.", "",
        "| model | params | GFLOP/image | train img/s | achieved GFLOP/s | utilisation |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for c in cs:
        achieved = flops[c.name] * res[c.name]["train"]
        peak = peaks["bf16" if "bf16" in c.name else "fp32"]
        lines.append(f"| {c.name} | {c.params / 1e6:.2f} M | {flops[c.name] / 1e9:.2f} | "
                     f"{res[c.name]['train']:.1f} | {achieved / 1e9:.0f} | "
                     f"{100 * achieved / peak:.0f}% |")
    if args.device == "cpu":  # on a GPU the CPU-side times would show launches, not kernels
        profiles = {c.name: breakdown(c, args.profile_steps) for c in (cs[0], cs[2])}
        lines += ["", f"Where a training step's time goes (torch.profiler, {args.profile_steps} "
                  "steps, self CPU time):", "",
                  "| | " + " | ".join(profiles) + " |", "|---|" + "---:|" * len(profiles)]
        for k in profiles[cs[0].name]:
            cells = [f"{p[k]:.0f}" if k == "ms per step" else f"{100 * p[k]:.0f}%"
                     for p in profiles.values()]
            lines.append(f"| {k} | " + " | ".join(cells) + " |")
    write(f"hardware_{size}", lines, args)


@torch.inference_mode()
def sample_diffusers(net: UNet2DModel, n: int, steps: int, w: float, device: str,
                     batch: int = 250) -> tuple[Tensor, Tensor]:
    """n class-balanced samples (class i mod 10) with DDIM and classifier-free guidance."""
    scheduler = DDIMScheduler.from_config(DDPMScheduler(num_train_timesteps=1000).config)
    scheduler.set_timesteps(steps)
    gen = torch.Generator(device).manual_seed(0)
    labels, out = torch.arange(n) % CLASSES, []
    for lo in range(0, n, batch):
        y = labels[lo:lo + batch].to(device)
        x = torch.randn((len(y), net.config.in_channels, net.config.sample_size,
                         net.config.sample_size), generator=gen, device=device)
        both = torch.cat([y, torch.full_like(y, CLASSES)])
        for t in scheduler.timesteps:
            eps_c, eps_u = net(torch.cat([x, x]), t, class_labels=both).sample.chunk(2)
            x = scheduler.step(eps_u + w * (eps_c - eps_u), t, x).prev_sample
        out.append(x.cpu())
    return torch.cat(out).clamp(-1, 1), labels


def forever(loader: DataLoader) -> Iterator[tuple[Tensor, Tensor]]:
    while True:
        yield from loader


def part_quality(args: argparse.Namespace) -> None:
    metrics, half = ["fd_cls", "accuracy"], args.minutes / 2
    config = load_recipe("fashion-mnist", [f"train.max_minutes={half}"])
    settings = dict(sampler="ddim", steps=args.sample_steps, guidance=config.sample.guidance)
    rows = []
    run_dir = Path(args.run_dir)
    shutil.rmtree(run_dir, ignore_errors=True)
    seconds = 0.0
    for minutes in (half, args.minutes):  # the second call resumes the run for another half
        inkfuse.train(config, run_dir, progress=False)
        logs = (run_dir / "log.jsonl").read_text().splitlines()
        last = json.loads(logs[-1])
        seconds += last["seconds"]
        r = evaluate(run_dir, metrics, n=args.n, progress=False, device=args.device, **settings)
        rows.append(("inkfuse (fashion-mnist.toml)", minutes, seconds, last["step"],
                     last["step"] * config.train.batch_size, r))
        print(rows[-1], flush=True)

    data = build_dataset(config.data)
    loader = DataLoader(TensorDataset(data.to_float(), data.labels), batch_size=args.their_batch,
                        shuffle=True)
    batches = forever(loader)
    torch.manual_seed(0)
    net = diffusers_unet(28).to(args.device)
    step, ema = diffusers_trainer(net, args.device, bf16=False, total_steps=len(loader) * 100)
    steps, seconds = 0, 0.0
    for minutes in (half, args.minutes):
        t0 = time.monotonic()
        while seconds + time.monotonic() - t0 < 60 * minutes:
            x0, labels = next(batches)
            step(x0.to(args.device), labels.to(args.device))
            steps += 1
        seconds += time.monotonic() - t0
        ema.store(net.parameters())
        ema.copy_to(net.parameters())
        images, labels = sample_diffusers(net, args.n, args.sample_steps,
                                          config.sample.guidance, args.device)
        ema.restore(net.parameters())
        r = evaluate_images(images, labels, config.data, metrics, progress=False)
        rows.append(("diffusers (train_unconditional.py + classes)", minutes, seconds, steps,
                     steps * args.their_batch, r))
        print(rows[-1], flush=True)

    ours_half, theirs_full = rows[0][-1], rows[-1][-1]
    lines = [
        *header("Time to quality on Fashion-MNIST (28×28×1, class-conditional)", args),
        "Both trained for the same wall-clock budget on this machine and scored at half and full "
        f"budget: {args.n} class-balanced samples (DDIM {args.sample_steps} steps, CFG w = "
        f"{config.sample.guidance:g}, EMA weights) judged by the shipped Fashion-MNIST "
        "classifier. FD_cls: Fréchet distance to the test set in its feature space (lower is "
        "better); accuracy: share of samples classified as the class asked for. Ours: "
        f"`fashion-mnist.toml` as it is (batch {config.train.batch_size}, lr "
        f"{config.train.lr:g}, cosine noise schedule, bf16); theirs: train_unconditional.py's "
        f"defaults (batch {args.their_batch}, lr 1e-4, linear β, fp32, DataLoader) with class "
        f"labels. Parameters: ours {count(inkfuse.load_run(run_dir).net) / 1e6:.2f} M, theirs "
        f"{count(net) / 1e6:.2f} M.", "",
        "| model | budget | trained | steps | images seen | FD_cls ↓ | accuracy ↑ |",
        "|---|---:|---:|---:|---:|---:|---:|",
        *[f"| {name} | {m:g} min | {s / 60:.1f} min | {st} | {im} | {r['fd_cls']:.2f} | "
          f"{100 * r['accuracy']:.1f}% |" for name, m, s, st, im, r in rows], "",
        f"Goal (ours at {half:g} min at least as good as diffusers at {args.minutes:g} min): "
        f"FD_cls {ours_half['fd_cls']:.2f} vs {theirs_full['fd_cls']:.2f}, accuracy "
        f"{100 * ours_half['accuracy']:.1f}% vs {100 * theirs_full['accuracy']:.1f}%: "
        + ("met." if ours_half["fd_cls"] <= theirs_full["fd_cls"]
           and ours_half["accuracy"] >= theirs_full["accuracy"] else "not met."),
    ]
    write("quality", lines, args)


PARTS = {"throughput": part_throughput, "hardware": part_hardware, "levers": part_levers,
         "quality": part_quality}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("part", choices=["throughput", "hardware", "levers", "quality", "all"])
    p.add_argument("--quick", action="store_true", help="seconds-long settings, to check it runs")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--sizes", type=int, nargs="+", default=list(SIZES), choices=list(SIZES))
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--seconds", type=float, default=4.0, help="per measurement")
    p.add_argument("--warmup", type=int, default=3, help="steps before measuring")
    p.add_argument("--threads", type=int, help="torch threads (default: one per core)")
    p.add_argument("--sample-batch", type=int, default=64)
    p.add_argument("--size", type=int, default=64, choices=list(SIZES), help="hardware, levers")
    p.add_argument("--profile-steps", type=int, default=3)
    p.add_argument("--minutes", type=float, default=10.0, help="quality: training budget")
    p.add_argument("--n", type=int, default=1000, help="quality: samples scored per model")
    p.add_argument("--sample-steps", type=int, default=50)
    p.add_argument("--their-batch", type=int, default=16, help="the example's default")
    p.add_argument("--run-dir", default="runs/bench-vs-diffusers")
    p.add_argument("--default-malloc", action="store_true",
                   help="leave glibc's malloc thresholds alone, to measure what they give")
    args = p.parse_args()
    if args.quick:
        args.rounds, args.seconds, args.warmup, args.profile_steps = 2, 0.5, 1, 1
        args.minutes, args.n, args.sample_steps = 1.0, 200, 20
    if args.threads:
        torch.set_num_threads(args.threads)
    if not args.default_malloc:  # process-wide: both contenders get it, as `inkfuse` runs do
        keep_freed_memory()
    parts = ["hardware", "throughput", "levers", "quality"] if args.part == "all" else [args.part]
    for part in parts:
        PARTS[part](args)


if __name__ == "__main__":
    main()
