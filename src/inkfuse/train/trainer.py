"""The one training loop: data → noise → loss → AdamW, with EMA, checkpoints and exact resume.

Exact resume without saving RNG states: every random draw of step k (timesteps, noise, the
condition mask, augmentation, dropout) comes from generators re-seeded from (seed, rank, k), and
the data order of epoch e is a permutation seeded from (seed, e). So a run stopped after step k
and resumed continues with bit-identical batches and noise, and ends with the same weights as a
run that never stopped (on the same device). Under `torchrun` each rank draws its own slice of
every global batch; only rank 0 writes.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist
from torch import Tensor, nn
from tqdm import tqdm

from inkfuse import config as config_mod
from inkfuse.clip.conditioner import TextConditioner, copy_clip, is_pretrained, load_conditioner
from inkfuse.config import Config
from inkfuse.data import ImageDataset, build_dataset
from inkfuse.data.transforms import augment
from inkfuse.diffusion import Condition, Schedule, diffusion_loss
from inkfuse.diffusion.latent import LatentSpace, copy_vae, load_latent_space
from inkfuse.diffusion.upsampling import shrink, training_levels, with_low_res
from inkfuse.errors import CheckpointError, InkfuseError, TrainingError
from inkfuse.nn import build_model
from inkfuse.runtime import keep_freed_memory
from inkfuse.train import checkpoint
from inkfuse.train.ema import EMA


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
    """This rank's image indices for global micro-batch `micro_step` (epochs drop the remainder)."""
    global_batch = batch * d.world
    per_epoch = n // global_batch
    epoch, pos = divmod(micro_step, per_epoch)
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed_for(seed, epoch)))
    chunk = perm[pos * global_batch:(pos + 1) * global_batch]
    return chunk[d.rank::d.world]


def warmup_cosine(step: int, steps: int, warmup: int, floor: float = 0.0) -> float:
    """LR multiplier: linear warm-up over `warmup` steps, then a cosine from 1 down to `floor`."""
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, steps - warmup))
    return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))


def lr_at(step: int, cfg: config_mod.TrainConfig) -> float:
    """Linear warm-up, then constant or cosine decay to 10% of the peak."""
    if cfg.lr_schedule == "constant" and step >= cfg.warmup_steps:
        return cfg.lr
    return cfg.lr * warmup_cosine(step, cfg.steps, cfg.warmup_steps, floor=0.1)


def make_optimizer(net: nn.Module, tc: config_mod.TrainConfig, fused: bool = True
                   ) -> torch.optim.AdamW:
    """AdamW with the fused kernel, on CPU as on CUDA: one pass over all parameters instead of
    one op per tensor list and moment. For the 16 px recipe model the optimizer step takes
    2.3 ms instead of 8.0 ms with the `foreach` kernels (`fused=False`, kept to measure that:
    benchmarks/README.md), a few percent of a training step."""
    return torch.optim.AdamW(net.parameters(), lr=tc.lr, weight_decay=tc.weight_decay,
                             fused=fused, foreach=not fused)


def apply_update(net: nn.Module, opt: torch.optim.Optimizer, ema: EMA,
                 tc: config_mod.TrainConfig, step: int) -> None:
    """What follows the backward pass of a step: clip the gradient norm, step AdamW, drop the
    gradients, move the EMA. One function, so that the benchmarks time exactly this."""
    if tc.grad_clip > 0:
        nn.utils.clip_grad_norm_(net.parameters(), tc.grad_clip)
    opt.step()
    opt.zero_grad(set_to_none=True)
    ema.update(net, step)


def resolve(config: Config, data: ImageDataset, text: TextConditioner | None = None,
            latent: LatentSpace | None = None) -> Config:
    """Fill in what the data (and the text encoder, and the VAE) decide: input channels and
    size, condition widths."""
    cond_dim, token_dim, null = 0, 0, "learned"
    if text is not None:
        cond_dim, token_dim, null = text.pooled_dim, text.token_dim, "empty-prompt"
    elif config.data.labels == "class" and data.labels is not None:
        cond_dim = len(data.class_names)
    elif config.data.labels == "context" and data.context is not None:
        cond_dim = data.context.shape[1]
    channels, size = data.channels, 0
    if latent is not None:
        channels, size, _ = latent.shape(config.data.size)
    return config_mod.replace(config, model={
        "in_channels": config.model.in_channels or channels,
        "size": config.model.size or size,
        "cond_dim": config.model.cond_dim or cond_dim,
        "token_dim": config.model.token_dim or token_dim,
        "low_res_channels": config.model.low_res_channels or (
            data.channels if config.data.low_res else 0),
        "null_condition": null,
    })


Conditions = Callable[[Tensor, torch.Generator], Condition | None]


def condition_source(config: Config, data: ImageDataset, text: TextConditioner | None,
                     device: torch.device) -> Conditions:
    """`draw(idx, gen)`: the condition of images `idx` (before the CFG drop).

    Captions are tokenized once; each step encodes its batch with the frozen text model,
    drawing one of each image's caption variants when the data has them. CLIP image
    embeddings (the course's trick) are computed once for the whole dataset."""
    labels = config.data.labels
    if labels == "text":
        variants = data.caption_variants
        texts = variants.texts if variants else [[c] for c in data.captions]
        probs = (variants.probs if variants else torch.ones(1)).to(device)
        flat = [c for options in texts for c in options]
        ids, mask = (t.view(len(texts), len(texts[0]), -1).to(device)
                     for t in text.tokenize(flat))

        def draw_text(idx: Tensor, gen: torch.Generator) -> Condition:
            v = torch.multinomial(probs, len(idx), replacement=True, generator=gen)
            return text.encode_ids(ids[idx, v], mask[idx, v])

        return draw_text
    if labels == "clip-image":
        embeddings = text.encode_images(data.images).to(device)
        return lambda idx, gen: Condition.from_vectors(embeddings[idx])
    if not config.model.cond_dim:
        return lambda idx, gen: None
    if data.context is not None:
        return lambda idx, gen: Condition.from_vectors(data.context[idx])
    return lambda idx, gen: Condition.from_labels(data.labels[idx], config.model.cond_dim)


def prepare_text(config: Config, run_dir: Path, data: ImageDataset, device: torch.device,
                 d: Dist, progress: bool) -> TextConditioner | None:
    """The frozen CLIP of a text (or CLIP-image) conditioned run, kept in RUN/clip.

    `text.encoder` names a CLIP run dir (copied into RUN/clip so the run stays whole) or an
    open_clip model (used in place); empty trains one on the run's own captions first."""
    if config.data.labels not in ("text", "clip-image"):
        return None
    if data.captions is None:
        raise TrainingError(f"data.labels = {config.data.labels!r} needs captions: use the "
                            "shapes dataset or a folder with captions.csv")
    spec = config.text.encoder
    if not is_pretrained(spec) and d.main and not (run_dir / "clip" / "clip.json").is_file():
        if spec:
            copy_clip(spec, run_dir / "clip")
        else:
            _train_clip(config, run_dir / "clip", progress)
    if d.world > 1:
        dist.barrier()
    return load_conditioner(spec if is_pretrained(spec) else run_dir / "clip",
                            config.text.conditioning, device)


def prepare_latents(config: Config, run_dir: Path, device: torch.device, d: Dist
                    ) -> LatentSpace | None:
    """The frozen VAE of a latent diffusion run, copied into RUN/vae."""
    if not config.data.vae:
        return None
    if d.main and not (run_dir / "vae" / "vae.json").is_file():
        copy_vae(config.data.vae, run_dir / "vae")
    if d.world > 1:
        dist.barrier()
    return load_latent_space(run_dir / "vae", device)


def _train_clip(config: Config, out: Path, progress: bool) -> None:
    from inkfuse.clip.train import train_clip

    dc = config.data
    if dc.name != "shapes":
        raise TrainingError("only shapes captions can train a CLIP on the fly; train one with "
                            "`inkfuse clip train --folder DIR` and set text.encoder")
    train_clip({"size": dc.size, "max_objects": dc.max_objects,  # its own 20k pairs
                "steps": config.text.clip_steps, "seed": config.train.seed,
                "device": str(pick_device(config.train.device))}, out, progress=progress)


def dataset_meta(data: ImageDataset, config: Config) -> dict:
    prompts = config.sample.prompts
    if not prompts and config.data.labels in ("text", "clip-image"):
        prompts = list(dict.fromkeys(data.captions))[:8]  # distinct, in data order
    return {"name": data.name, "size": data.size, "channels": data.channels,
            "class_names": data.class_names, "context_names": data.context_names,
            "prompts": prompts}


def train(config: Config, out: str | Path, *, progress: bool = True,
          data: ImageDataset | None = None) -> Path:
    """Train (or resume) the run in `out`; returns the run dir. See the module docstring."""
    run_dir = Path(out)
    tc = config.train
    keep_freed_memory()
    device = pick_device(tc.device, int(os.environ.get("LOCAL_RANK", "0")))
    d = setup_distributed(device)
    if device.type == "cuda":
        torch.cuda.set_device(device)

    data = data if data is not None else build_dataset(config.data, seed=tc.seed)
    if len(data) < tc.batch_size * d.world:
        raise TrainingError(f"the dataset has {len(data)} images, fewer than one batch of "
                            f"{tc.batch_size * d.world}; lower train.batch_size")
    text = prepare_text(config, run_dir, data, device, d, progress)
    latent = prepare_latents(config, run_dir, device, d)
    config = resolve(config, data, text, latent)
    saved = run_dir / "config.json"
    if saved.is_file():
        _check_same_model(config, checkpoint.read_json(saved), run_dir)
    data = data.to(device)
    conditions = condition_source(config, data, text, device)
    if latent is not None:  # encode once; each step draws z from the posterior
        z_mean, z_std = latent.encode_dataset(data.images)

    schedule = Schedule(config.diffusion.schedule, config.diffusion.timesteps,
                        config.diffusion.beta_start, config.diffusion.beta_end)
    torch.manual_seed(seed_for(tc.seed, 0))
    net = build_model(config.model, config.data.size, config.diffusion.timesteps).to(device)
    if text is not None:
        net.set_null_text(*text.null())
    memory = torch.channels_last if tc.channels_last else torch.contiguous_format
    net = net.to(memory_format=memory)
    ema = EMA(net, tc.ema_decay)
    opt = make_optimizer(net, tc)

    start = 0
    ckpt = checkpoint.find(run_dir)
    if ckpt is not None:
        start = _resume(ckpt, net, ema, opt)
    model = nn.parallel.DistributedDataParallel(net) if d.world > 1 else net
    forward = torch.compile(model) if tc.compile else model

    if d.main:
        run_dir.mkdir(parents=True, exist_ok=True)
        checkpoint.write_json(saved, {**config.to_dict(), "dataset": dataset_meta(data, config)})
        truncate_log(run_dir / "log.jsonl", start)
    if start >= tc.steps:
        return run_dir

    gen = torch.Generator(device)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=tc.precision == "bf16")
    budget = f" (stops after {tc.max_minutes:g} min)" if tc.max_minutes else ""
    bar = tqdm(total=tc.steps, initial=start, disable=not (progress and d.main), unit="step",
               desc=f"training{budget}", dynamic_ncols=True)
    t0, images_seen = time.monotonic(), 0
    step = start
    while step < tc.steps:
        lr = lr_at(step, tc)
        for group in opt.param_groups:
            group["lr"] = lr
        torch.manual_seed(seed_for(tc.seed, d.rank, step, 1))
        gen.manual_seed(seed_for(tc.seed, d.rank, step, 2))
        total = 0.0
        for micro in range(tc.grad_accum):
            idx = batch_indices(len(data), tc.batch_size, step * tc.grad_accum + micro, tc.seed, d)
            if latent is not None:
                i = idx.to(device)
                x0 = z_mean[i] + z_std[i] * torch.randn(z_mean[i].shape, generator=gen,
                                                        device=device)
            else:
                x0 = augment(data.to_float(idx.to(device)), hflip=config.data.hflip,
                             crop_padding=config.data.crop_padding, generator=gen)
            x0 = x0.contiguous(memory_format=memory)
            cond = conditions(idx.to(device), gen)
            if cond is not None:
                cond = cond.dropped(config.diffusion.cond_drop_prob, gen)
            if config.data.low_res:  # super-resolution: the shrunk image is the condition
                level = training_levels(len(x0), config.diffusion.low_res_noise, schedule, gen,
                                        device)
                cond = with_low_res(cond, shrink(x0, config.data.low_res), config.data.size,
                                    level, schedule, gen)
            sync = model.no_sync() if d.world > 1 and micro < tc.grad_accum - 1 else nullcontext()
            with sync, autocast:
                loss = diffusion_loss(forward, schedule, x0, cond, target=config.diffusion.target,
                                      weighting=config.diffusion.loss_weighting,
                                      gamma=config.diffusion.min_snr_gamma, generator=gen)
                (loss / tc.grad_accum).backward()
            total += loss.item() / tc.grad_accum
        if not math.isfinite(total):
            kept = checkpoint.find(run_dir)
            where = f"the last good checkpoint is kept in {kept}" if kept else "no checkpoint yet"
            raise TrainingError(f"loss became {total} at step {step}; {where}. "
                                "Lower train.lr or set train.grad_clip (e.g. 1.0)")
        apply_update(net, opt, ema, tc, step)
        step += 1
        images_seen += tc.batch_size * tc.grad_accum * d.world
        bar.update(1)

        elapsed = time.monotonic() - t0
        out_of_time = tc.max_minutes > 0 and elapsed > 60 * tc.max_minutes
        if d.world > 1:  # every rank must agree to stop at the same step
            flag = torch.tensor([float(out_of_time)], device=device)
            dist.all_reduce(flag, op=dist.ReduceOp.MAX)
            out_of_time = bool(flag.item())
        if d.main and (step % tc.log_every == 0 or step == tc.steps or out_of_time):
            rate = images_seen / max(elapsed, 1e-9)
            bar.set_postfix(loss=f"{total:.4f}", img_s=f"{rate:.0f}")
            append_log(run_dir / "log.jsonl", {"step": step, "loss": total, "lr": lr,
                                                 "images_per_s": rate, "seconds": elapsed})
        if step % tc.checkpoint_every == 0 or step == tc.steps or out_of_time:
            if d.main:
                _save(run_dir, net, ema, opt, step, config, data)
            if d.world > 1:
                dist.barrier()
        if out_of_time:
            break
    bar.close()
    return run_dir


def _save(run_dir: Path, net: nn.Module, ema: EMA, opt: torch.optim.Optimizer, step: int,
          config: Config, data: ImageDataset) -> None:
    """Checkpoint, then the pictures of progress: a sample grid and the loss plot."""
    tensors, rest = checkpoint.optimizer_tensors(opt.state_dict())
    checkpoint.save(run_dir, net.state_dict(), ema.state_dict(), tensors,
                    {"step": step, "optimizer": rest})
    from inkfuse import pipelines, viz  # the grid needs the sampling glue, not the other way

    run = pipelines.load_run(run_dir, device=next(net.parameters()).device)
    real = data.to_float(slice(0, 64 * config.sample.per_class)) if config.data.low_res else None
    images, labels = pipelines.sample_grid(run, per_class=config.sample.per_class, progress=False,
                                           real=real)
    (run_dir / "samples").mkdir(exist_ok=True)
    viz.save_grid(images, run_dir / "samples" / f"step-{step:07d}.png",
                  nrow=config.sample.per_class, labels=labels)
    with contextlib.suppress(InkfuseError):  # no matplotlib: the log is still there
        viz.plot_loss(run_dir / "log.jsonl", run_dir / "loss.png")


def _resume(ckpt: Path, net: nn.Module, ema: EMA, opt: torch.optim.Optimizer) -> int:
    state = checkpoint.read_json(ckpt / "state.json")
    try:
        net.load_state_dict(checkpoint.load_tensors(ckpt / "model.safetensors"))
        ema.load_state_dict(checkpoint.load_tensors(ckpt / "ema.safetensors"))
        tensors = checkpoint.load_tensors(ckpt / "trainer.safetensors")
        opt.load_state_dict(checkpoint.optimizer_state(tensors, state["optimizer"]))
    except (RuntimeError, KeyError, ValueError) as e:
        raise CheckpointError(f"{ckpt} does not fit this model ({str(e).splitlines()[0]}); "
                              "train into a new --out dir") from None
    return int(state["step"])


def _check_same_model(config: Config, saved: dict, run_dir: Path) -> None:
    for section in ("data", "model", "diffusion"):
        ours, theirs = config.to_dict()[section], saved.get(section, {})
        for key, value in ours.items():
            if section == "data" and key in ("limit",):
                continue
            if theirs.get(key, value) != value:
                raise CheckpointError(
                    f"{run_dir} was trained with {section}.{key} = {theirs[key]!r}, not {value!r}; "
                    "resume with the same recipe or train into a new --out dir")


def append_log(path: Path, record: dict) -> None:
    with path.open("a") as f:
        f.write(json.dumps(record) + "\n")


def truncate_log(path: Path, step: int) -> None:
    """Drop log lines past the checkpoint we resume from, so a resumed log has no duplicates."""
    if not path.is_file():
        return
    lines = [ln for ln in path.read_text().splitlines() if ln.strip()]
    kept = []
    for ln in lines:
        try:
            if json.loads(ln)["step"] <= step:
                kept.append(ln)
        except (json.JSONDecodeError, KeyError, TypeError):
            continue  # a line cut short by a kill
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text("".join(k + "\n" for k in kept))
    os.replace(tmp, path)
