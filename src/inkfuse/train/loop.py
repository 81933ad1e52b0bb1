"""The one training loop, for every model kind: device, processes, seeds, learning rate, AdamW,
EMA, accumulation, clipping, the NaN stop, logging, checkpoints with exact resume, the time
budget and DDP. `run` reads top to bottom; a model kind (`train.diffusion`, `train.vae`,
`train.clip`) plugs in as a `Kind`: its data, network and loss, and what it writes besides the
checkpoint.

Two optional extras watch the run without touching it. `train.eval_every` scores a small sample
of the EMA weights in memory (`Kind.score`) into log.jsonl; the time it takes counts neither
towards `train.max_minutes` nor towards the logged training time, and since every step reseeds
all it draws (below) and the scoring samples from its own seeded generator, the weights are
bit-identical with it on or off. `train.ema_snapshots_every` keeps post-hoc EMAs (`PowerEMA`)
and saves their snapshots for `inkfuse ema`.

Exact resume without saving RNG states: every random draw of step k (timesteps, noise, the
condition mask, augmentation, dropout) comes from generators re-seeded from (seed, rank, k), and
the data order of epoch e is a permutation seeded from (seed, e). So a run stopped after step k
and resumed continues with bit-identical batches and noise, and ends with the same weights as a
run that never stopped (on the same device). Under `torchrun` each rank draws its own slice of
every global batch, DDP averages the gradients, every rank takes the same decision to stop, and
only rank 0 writes.
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from collections.abc import Iterable
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn
from tqdm import tqdm

from inkfuse.artifacts import checkpoint
from inkfuse.artifacts import ema as snapshots
from inkfuse.artifacts.lock import locked
from inkfuse.artifacts.log import LOG, append_log, truncate_log
from inkfuse.config import Recipe, TrainConfig
from inkfuse.errors import CheckpointError, InkfuseError, TrainingError
from inkfuse.runtime import keep_freed_memory, resolve_precision
from inkfuse.train.ema import EMA, PowerEMA
from inkfuse.viz import plot_loss

# ----------------------------------------------------------------------------- the parts


@dataclass
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


def setup_distributed(device: torch.device) -> Dist:
    """Join the process group that `torchrun` describes in the environment, if any."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return Dist()
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return Dist(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def pick_device(name: str, local_rank: int = 0) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        if not torch.cuda.is_available():
            raise TrainingError("train.device = 'cuda' but no CUDA GPU is visible; use cpu or auto")
        return torch.device("cuda", local_rank)
    return torch.device("cpu")


def seed_for(seed: int, *parts: int) -> int:
    """A well-mixed 63-bit seed from several integers (splitmix64 steps)."""
    x = seed & (2**64 - 1)
    for p in parts:
        x = (x ^ (p + 0x9E3779B97F4A7C15 + (x << 6) + (x >> 2))) & (2**64 - 1)
        x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & (2**64 - 1)
        x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & (2**64 - 1)
        x ^= x >> 31
    return x & (2**63 - 1)


def batch_indices(n: int, batch: int, micro_step: int, seed: int, d: Dist) -> Tensor:
    """This rank's example indices for global micro-batch `micro_step` (epochs drop the
    remainder)."""
    global_batch = batch * d.world
    per_epoch = n // global_batch
    epoch, pos = divmod(micro_step, per_epoch)
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed_for(seed, epoch)))
    chunk = perm[pos * global_batch:(pos + 1) * global_batch]
    return chunk[d.rank::d.world]


HELD_OUT_SEED = 1_000_003  # kinds that score on generated data draw it from seed + this

LR_FLOOR = 0.1  # the cosine ends at this fraction of the peak


def lr_at(step: int, tc: TrainConfig) -> float:
    """Linear warm-up over `warmup_steps`, then constant, or a cosine from `lr` down to
    LR_FLOOR of it at the last step."""
    if tc.lr_schedule == "constant" and step >= tc.warmup_steps:
        return tc.lr
    if step < tc.warmup_steps:
        return tc.lr * ((step + 1) / tc.warmup_steps)
    progress = min(1.0, (step - tc.warmup_steps) / max(1, tc.steps - tc.warmup_steps))
    return tc.lr * (LR_FLOOR + (1 - LR_FLOOR) * 0.5 * (1 + math.cos(math.pi * progress)))


def make_optimizer(params: Iterable[Any], tc: TrainConfig, fused: bool = True
                   ) -> torch.optim.AdamW:
    """AdamW over `params` (tensors, or param groups with their own weight decay) with the fused
    kernel, on CPU as on CUDA: one pass over all parameters instead of one op per tensor list
    and moment, a few percent of a training step (`fused=False`, the `foreach` kernels, is kept
    to measure that: benchmarks/README.md)."""
    return torch.optim.AdamW(params, lr=tc.lr, weight_decay=tc.weight_decay,
                             fused=fused, foreach=not fused)


def apply_update(net: nn.Module, opt: torch.optim.Optimizer, ema: EMA | None,
                 tc: TrainConfig, step: int, powers: Iterable[PowerEMA] = ()) -> None:
    """What follows the backward pass of a step: clip the gradient norm, step AdamW, drop the
    gradients, move the EMA (and the post-hoc EMAs). One function, so that the benchmarks time
    exactly this."""
    if tc.grad_clip > 0:
        nn.utils.clip_grad_norm_(net.parameters(), tc.grad_clip)
    opt.step()
    opt.zero_grad(set_to_none=True)
    if ema is not None:
        ema.update(net, step)
    for power in powers:
        power.update(net, step)


def power_file(power: PowerEMA) -> str:
    """The checkpoint file (without .safetensors) of a post-hoc EMA's running average."""
    return f"power-ema-{power.sigma_rel:g}"


def agree(d: Dist, device: torch.device, *flags: bool) -> list[bool]:
    """Each flag true on every rank if it is true on any: all ranks stop at the same step."""
    if d.world == 1:
        return list(flags)
    t = torch.tensor([float(f) for f in flags], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return [bool(v) for v in t.tolist()]


def check_same_model(ours: dict[str, Any], theirs: dict[str, Any], sections: Iterable[str],
                     run_dir: Path) -> None:
    """Refuse to resume a run dir trained with other settings of `sections` (data.limit may
    change: it only shortens the data)."""
    for section in sections:
        saved = theirs.get(section, {})
        for key, value in ours[section].items():
            if (section, key) != ("data", "limit") and saved.get(key, value) != value:
                raise CheckpointError(
                    f"{run_dir} was trained with {section}.{key} = {saved[key]!r}, not "
                    f"{value!r}; resume with the same recipe or train into a new --out dir")


def resume(ckpt: Path, state: dict[str, Any], net: nn.Module, ema: EMA | None,
           opt: torch.optim.Optimizer, powers: Iterable[PowerEMA] = ()) -> int:
    """Load a checkpoint's weights, EMA, post-hoc EMAs and AdamW moments; returns its step."""
    fix = "train into a new --out dir"
    for power in powers:  # before any tensor is loaded: one line naming the setting
        if not (ckpt / f"{power_file(power)}.safetensors").is_file():
            raise CheckpointError(
                f"{ckpt} holds no post-hoc EMA of sigma_rel {power.sigma_rel:g}: the run was "
                "started without train.ema_snapshots_every or with other "
                "train.ema_sigma_rels; resume with the settings it started with, or train "
                "into a new --out dir")
    try:  # names, shapes and dtypes checked first: a retyped tensor is refused, not cast
        net.load_state_dict(checkpoint.load_checked(ckpt / "model.safetensors", net.state_dict(),
                                                    "this model", fix))
        if ema is not None:
            ema.load_state_dict(checkpoint.load_checked(ckpt / "ema.safetensors",
                                                        ema.state_dict(), "this model", fix))
        for power in powers:
            power.load_state_dict(checkpoint.load_checked(
                ckpt / f"{power_file(power)}.safetensors", power.state_dict(), "this model",
                fix))
        opt.load_state_dict(checkpoint.load_optimizer(ckpt, state, opt, fix))
    except (RuntimeError, KeyError, ValueError, TypeError) as e:
        raise CheckpointError(f"{ckpt} does not fit this model ({str(e).splitlines()[0]}); "
                              "train into a new --out dir") from None
    return int(state["step"])


def save_checkpoint(run_dir: Path, config: Recipe, net: nn.Module, weights: dict[str, Tensor],
                    opt: torch.optim.Optimizer, step: int, train_seconds: float = 0.0,
                    powers: Iterable[PowerEMA] = ()) -> None:
    """`weights` are what the run hands on: the EMA, or without one the weights themselves
    (what an EMA of decay 0 would hold), so every checkpoint has both files filled.
    `train_seconds` (the run's training time so far) lets a resumed run's log continue it."""
    tensors, rest = checkpoint.optimizer_tensors(opt.state_dict())
    checkpoint.save(run_dir, net.state_dict(), weights, tensors,
                    {"step": step, "optimizer": rest, "config": config.to_dict(),
                     "train_seconds": train_seconds},
                    extra={power_file(p): p.state_dict() for p in powers})


def save_snapshots(run_dir: Path, powers: Iterable[PowerEMA], step: int) -> None:
    """Every post-hoc EMA as it is after `step` updates, into RUN/ema_snapshots/."""
    for p in powers:
        snapshots.save_snapshot(run_dir, snapshots.Snapshot(step, p.sigma_rel, p.gamma),
                                p.state_dict())


# ----------------------------------------------------------------------------- model kinds


class Kind:
    """What a model kind gives the loop; the loop owns every step. A kind is built as
    `Kind(recipe, run_dir, device, dist, progress)` and loads its data then (`setup`), so that
    `size` (the training examples `batch_indices` draws from) and `config` (the recipe with what
    the data decides filled in: what the run is trained with) are known. The defaults below suit
    a kind with nothing special to say."""

    label = "training"  # the progress bar's
    sections: tuple[str, ...] = ()  # recipe tables a resumed run must share with its checkpoint
    size: int

    def __init__(self, config: Recipe, run_dir: Path, device: torch.device, d: Dist,
                 progress: bool) -> None:
        self.config, self.run_dir, self.device, self.dist = config, run_dir, device, d
        self.progress = progress
        self.setup()

    def setup(self) -> None:
        """Load the data and the frozen parts; set `size`, and `config` if the data adds to it."""
        raise NotImplementedError

    def make_model(self) -> nn.Module:
        """The network to train, on `device`; the loop seeds its initialisation."""
        raise NotImplementedError

    def param_groups(self, model: nn.Module) -> Iterable[Any]:
        """The parameters for AdamW, or groups of them with their own AdamW settings
        (`weight_decay`, `betas`) and an `lr_scale`: the group's rate is that times the
        schedule's (a GAN's two time-scales)."""
        return model.parameters()

    def batch(self, idx: Tensor, gen: torch.Generator) -> Any:
        """The inputs of examples `idx` (CPU indices), prepared outside autocast; every random
        draw from `gen`."""
        raise NotImplementedError

    def loss(self, forward: nn.Module, batch: Any, gen: torch.Generator
             ) -> tuple[Tensor, dict[str, float]]:
        """(loss, named parts to log) of `batch`, through `forward` (the model, or its DDP or
        compiled wrapper), under autocast."""
        raise NotImplementedError

    def saved_config(self, state: dict[str, Any] | None) -> dict[str, Any]:
        """The recipe the run dir was trained with, to compare `sections` against."""
        return (state or {}).get("config", {})

    def begin(self) -> None:
        """Rank 0, before the first step (after a resume too)."""

    def on_checkpoint(self, step: int, weights: dict[str, Tensor]) -> None:
        """Rank 0, after each checkpoint: `weights` are the checkpoint's EMA weights."""

    def eval_metrics(self) -> list[str]:
        """The metrics `score` reports (`train.eval_every`), checked to be computable before the
        first step; a kind without samples to score refuses."""
        raise TrainingError(f"train.eval_every scores samples of diffusion runs, not of a "
                            f"{self.label} run; set train.eval_every = 0")

    def score(self, step: int, weights: dict[str, Tensor], metrics: list[str]
              ) -> dict[str, float | None]:
        """Rank 0, every `train.eval_every` steps: {metric: value} of `weights` (the EMA in
        memory), None where a value could not be computed."""
        raise NotImplementedError

    def finish(self, step: int, weights: dict[str, Tensor]) -> None:
        """Rank 0, when training ends or runs out of time: save and score the final model."""


# ----------------------------------------------------------------------------- the loop


def run(config: Recipe, out: str | Path, kind_cls: type[Kind], *, progress: bool = True,
        solo: bool = False) -> Path:
    """Train (or resume) `config` as a `kind_cls` in `out`; returns the run dir. `solo` trains
    in this process alone even under `torchrun` (rank 0 training a part the run depends on)."""
    run_dir = Path(out)
    keep_freed_memory()

    # devices and processes: one per GPU (or CPU process) under torchrun
    device = pick_device(config.train.device, int(os.environ.get("LOCAL_RANK", "0")))
    d = Dist() if solo else setup_distributed(device)
    if device.type == "cuda":
        torch.cuda.set_device(device)

    # Rank 0 takes the lock before anything is written (the kind may write RUN/clip or RUN/vae),
    # and a command that fails before its first checkpoint takes back all it created: so the
    # corrected command starts clean and is never refused as "trained with" the failed recipe.
    kept = locked(run_dir, keep=lambda: checkpoint.find(run_dir) is not None)
    with kept if d.main else nullcontext():
        return _train(_make_kind(kind_cls, config, run_dir, device, d, progress), run_dir,
                      device, d, progress)


def _make_kind(kind_cls: type[Kind], config: Recipe, run_dir: Path, device: torch.device,
               d: Dist, progress: bool) -> Kind:
    """The kind: its data, frozen parts and resolved recipe, checked to fill one batch."""
    kind = kind_cls(config, run_dir, device, d, progress)
    if kind.size < config.train.batch_size * d.world:
        raise TrainingError(f"the dataset has {kind.size} examples, fewer than one batch of "
                            f"{config.train.batch_size * d.world}; lower train.batch_size")
    return kind


def _train(kind: Kind, run_dir: Path, device: torch.device, d: Dist, progress: bool) -> Path:
    config, tc = kind.config, kind.config.train
    ckpt = checkpoint.find(run_dir)
    state = checkpoint.read_json(ckpt / "state.json") if ckpt else None
    if ckpt:  # a run dir without a checkpoint is not trained yet: any recipe may start it
        check_same_model(config.to_dict(), kind.saved_config(state), kind.sections, run_dir)
    metrics = kind.eval_metrics() if tc.eval_every else []  # refused before the first step
    if d.main and snapshots.saved_reconstruction(run_dir):
        # `inkfuse ema --save` made a reconstruction the checkpoint's EMA; training on moves
        # the end it was reconstructed for, so the running EMA continues from the recipe's own
        snapshots.restore_ema(run_dir)
    if d.world > 1:
        dist.barrier()

    # the model (the same initial weights on every rank), its EMA and AdamW; resume
    torch.manual_seed(seed_for(tc.seed, 0))
    net = kind.make_model()
    ema = EMA(net, tc.ema_decay) if tc.ema_decay > 0 else None
    powers = [PowerEMA(net, s) for s in tc.ema_sigma_rels] if tc.ema_snapshots_every else []
    opt = make_optimizer(kind.param_groups(net), tc)
    start = resume(ckpt, state, net, ema, opt, powers) if ckpt else 0
    trained = float(state.get("train_seconds", 0.0)) if ckpt else 0.0  # before this process
    model = nn.parallel.DistributedDataParallel(net) if d.world > 1 else net
    forward = torch.compile(model) if tc.compile else model
    if d.main:
        kind.begin()
        truncate_log(run_dir / LOG, start)
        snapshots.prune(run_dir, start)

    gen = torch.Generator(device)
    bf16 = resolve_precision(tc.precision, device.type) == "bf16"
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16)
    budget = f" (stops after {tc.max_minutes:g} min)" if tc.max_minutes else ""
    bar = tqdm(total=tc.steps, initial=start, disable=not (progress and d.main), unit="step",
               desc=f"{kind.label}{budget}", dynamic_ncols=True)
    clock = time.process_time if tc.clock == "cpu" else time.monotonic
    t0, images_seen = clock(), 0
    scoring = 0.0  # seconds spent in `kind.score`: not training time
    step = start
    net.train()
    while step < tc.steps:
        lr = lr_at(step, tc)
        for group in opt.param_groups:
            group["lr"] = lr * group.get("lr_scale", 1.0)
        torch.manual_seed(seed_for(tc.seed, d.rank, step, 1))  # dropout
        gen.manual_seed(seed_for(tc.seed, d.rank, step, 2))  # everything the kind draws
        total, parts = 0.0, {}
        for micro in range(tc.grad_accum):
            idx = batch_indices(kind.size, tc.batch_size, step * tc.grad_accum + micro, tc.seed, d)
            batch = kind.batch(idx, gen)
            sync = model.no_sync() if d.world > 1 and micro < tc.grad_accum - 1 else nullcontext()
            with sync, autocast:
                loss, logged = kind.loss(forward, batch, gen)
                (loss / tc.grad_accum).backward()
            total += loss.item() / tc.grad_accum
            for key, value in logged.items():
                parts[key] = parts.get(key, 0.0) + value / tc.grad_accum

        elapsed = clock() - t0 - scoring
        diverged, out_of_time = agree(d, device, not math.isfinite(total),
                                      tc.max_minutes > 0 and elapsed > 60 * tc.max_minutes)
        if diverged:
            kept = checkpoint.find(run_dir)
            where = (f"the last good checkpoint is kept in {kept}" if kept
                     else "no checkpoint yet, so nothing of this run is kept")
            what = total if not math.isfinite(total) else "non-finite on another rank"
            raise TrainingError(f"loss became {what} at step {step}; {where}. "
                                "Lower train.lr or set train.grad_clip (e.g. 1.0)")
        apply_update(net, opt, ema, tc, step, powers)
        step += 1
        images_seen += tc.batch_size * tc.grad_accum * d.world
        bar.update(1)
        last = step == tc.steps or out_of_time

        # snapshots and scores before the checkpoint of the same step: a kill between them
        # resumes from the previous checkpoint, which drops them and writes them again
        if d.main and powers and (step % tc.ema_snapshots_every == 0 or last):
            save_snapshots(run_dir, powers, step)
        if metrics and (step % tc.eval_every == 0 or last):
            began = clock()
            if d.main:
                scores = kind.score(step, (ema or net).state_dict(), metrics)
                append_log(run_dir / LOG, {"step": step, "eval": scores, "eval_n": tc.eval_n,
                                           "eval_seconds": clock() - began,
                                           "seconds": elapsed, "train_seconds": trained + elapsed})
            if d.world > 1:
                dist.barrier()
            scoring += clock() - began
        if d.main and (step % tc.log_every == 0 or last):
            rate = images_seen / max(elapsed, 1e-9)
            bar.set_postfix(loss=f"{total:.4f}", img_s=f"{rate:.0f}")
            append_log(run_dir / LOG, {"step": step, "loss": total, **parts, "lr": lr,
                                       "images_per_s": rate, "seconds": elapsed,
                                       "train_seconds": trained + elapsed})
        if step % tc.checkpoint_every == 0 or last:
            if d.main:
                weights = (ema or net).state_dict()
                save_checkpoint(run_dir, config, net, weights, opt, step, trained + elapsed,
                                powers)
                kind.on_checkpoint(step, weights)
                with contextlib.suppress(InkfuseError):  # no matplotlib: the log is still there
                    plot_loss(run_dir / LOG, run_dir / "loss.png")
            if d.world > 1:
                dist.barrier()
        if out_of_time:
            break
    bar.close()
    net.eval()
    if d.main:
        kind.finish(step, (ema or net).state_dict())
    return run_dir
