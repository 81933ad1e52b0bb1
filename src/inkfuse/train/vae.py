"""Train the latent-diffusion autoencoder (`nn.vae.AutoencoderKL`), save it, load it, score it.

    config = load_vae_recipe("vae-shapes", ["train.steps=500"])
    metrics = train_vae(config, "runs/vae-shapes")
    vae = load_vae("runs/vae-shapes")
    z = vae.encode(x).mean * vae.scale_factor        # what a latent diffusion model trains on

A VAE recipe has three tables: `[data]` (the diffusion recipes' DataConfig: name, size, count,
limit, ...; labels are ignored), `[vae]` (the architecture, `VAEModelConfig`) and `[train]`
(`VAETrainConfig`). The loss is Stable Diffusion's without the GAN: an L1 (or L2) pixel error
plus `kl_weight` x KL(q(z|x) || N(0, I)), with SD's normalisation (reconstruction summed over
pixels, KL over latent elements), both divided by the pixel count so the logged loss reads as a
per-pixel error. The adversarial term of SD is left out: it sharpens textures at 256 px, costs a
second network and a fragile schedule, and the small flat images here do not need it.

Optional perceptual term (`perceptual_weight`, default 0): an LPIPS-style distance between the
conv features of one of the project's own shipped classifiers (`metrics/weights`), the only
trained vision networks available offline. LPIPS proper needs VGG/AlexNet weights we cannot
download, and the Inception network of FID is a 299 px pickle. Those classifiers saw 28 x 28
grey digits and clothes, so the term is allowed for 1-channel data only: the MNIST classifier for
MNIST, the Fashion-MNIST one for everything else grey.

Exact resume, as in the diffusion trainer: every random draw of step k (posterior noise,
augmentation) comes from generators re-seeded from (seed, k), the data order of epoch e from
(seed, e), and a checkpoint holds the weights and the Adam moments (safetensors) and the step
(JSON). A run killed after a checkpoint and started again ends with the same weights.

After training: PSNR and SSIM (`metrics.image_quality`) of reconstructions of held-out images
(the other split, a different seed for shapes, the last tenth of a folder), the latent scale
factor (1 / std of latents of training images), the latent shape, and `reconstructions.png`
(originals over reconstructions). A run dir holds `vae.safetensors` and `vae.json` (format tag,
architecture, config, metrics), plus `checkpoint/`, `log.jsonl` and `loss.png`.
"""

from __future__ import annotations

import contextlib
import copy
import math
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm import tqdm

from inkfuse.config import (
    DataConfig,
    bounded,
    build_section,
    check_data,
    choice,
    read_recipe,
)
from inkfuse.data import ImageDataset, build_dataset
from inkfuse.data.transforms import augment
from inkfuse.errors import CheckpointError, ConfigError, InkfuseError, TrainingError
from inkfuse.io import atomic_path
from inkfuse.metrics.image_quality import psnr, ssim
from inkfuse.nn.vae import DEFAULT_CHANNEL_MULT, AutoencoderKL, DiagonalGaussian, VAEModelConfig
from inkfuse.train import checkpoint
from inkfuse.train.checkpoint import load_tensors, read_json, save_tensors, write_json
from inkfuse.train.trainer import (
    Dist,
    append_log,
    batch_indices,
    pick_device,
    seed_for,
    truncate_log,
    warmup_cosine,
)

FORMAT = "inkfuse-vae-1"
WEIGHTS, META = "vae.safetensors", "vae.json"
HELD_OUT_SEED = 1_000_003  # shapes: held-out images are drawn with seed + this
GRID_COLUMNS = 8


@dataclass
class VAETrainConfig:
    steps: int = bounded(3000, 1, None)
    batch_size: int = bounded(32, 1, 65536)
    lr: float = bounded(1e-3, 0.0, 10.0, doc="peak; linear warm-up, cosine down to 10%")
    warmup_steps: int = bounded(100, 0, None)
    kl_weight: float = bounded(1e-6, 0.0, 1.0, doc="Stable Diffusion's 1e-6 (see module doc)")
    recon_loss: str = choice("l1", "l1", "l2")
    perceptual_weight: float = bounded(
        0.0, 0.0, 100.0, doc="classifier-feature distance, 1-channel data only (module doc)")
    grad_clip: float = bounded(1.0, 0.0, None, doc="max grad norm (0 = off)")
    precision: str = choice("fp32", "fp32", "bf16")
    device: str = choice("auto", "auto", "cpu", "cuda")
    seed: int = bounded(0, 0, 2**63 - 1)
    max_minutes: float = bounded(0.0, 0.0, None, doc="stop cleanly after this long (0 = off)")
    checkpoint_every: int = bounded(500, 1, None)
    log_every: int = bounded(10, 1, None)
    eval_count: int = bounded(
        512, 1, 100_000, doc="held-out images scored; as many training images set the scale")


@dataclass
class VAEConfig:
    data: DataConfig = field(default_factory=DataConfig)
    vae: VAEModelConfig = field(default_factory=VAEModelConfig)
    train: VAETrainConfig = field(default_factory=VAETrainConfig)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


_SECTIONS = {"data": DataConfig, "vae": VAEModelConfig, "train": VAETrainConfig}


# ----------------------------------------------------------------------------- config


def vae_config(raw: VAEConfig | dict[str, Any], source: str = "the VAE settings") -> VAEConfig:
    """A validated VAEConfig from nested dicts (TOML tables, vae.json) or one already built."""
    raw = raw.to_dict() if isinstance(raw, VAEConfig) else raw
    extra = sorted(set(raw) - set(_SECTIONS))
    if extra:
        hint = " (is it a diffusion recipe? VAE recipes are vae-*.toml)" if "model" in raw else ""
        raise ConfigError(f"unknown section [{extra[0]}] in {source}{hint} "
                          f"(known: {', '.join(_SECTIONS)})")
    cfg = VAEConfig(**{name: build_section(cls, raw.get(name, {}), name, source)
                       for name, cls in _SECTIONS.items()})
    _check_consistency(cfg)
    return cfg


def _check_consistency(cfg: VAEConfig) -> None:
    d, v = cfg.data, cfg.vae
    check_data(d)
    try:
        widths = v.widths()
    except ValueError as e:
        raise ConfigError(f"vae.{e}") from None
    side = d.size + 2 * v.pad
    if side % v.down_factor:
        raise ConfigError(f"data.size + 2 * vae.pad = {side} must be divisible by "
                          f"vae.down_factor = {v.down_factor}; change the size or set vae.pad")
    if d.size < 11:
        raise ConfigError(f"data.size = {d.size} is below 11, the window of the SSIM score")
    if any(w % v.groups for w in widths):
        raise ConfigError(f"vae.base_channels * channel_mult = {widths} must all be divisible by "
                          f"vae.groups = {v.groups}")


def load_vae_recipe(name_or_path: str | Path, overrides: Iterable[str] = ()) -> VAEConfig:
    """Read a VAE recipe (a path or a built-in name such as vae-shapes), apply `--set`s."""
    raw, path = read_recipe(name_or_path, overrides)
    return vae_config(raw, str(path))


# ----------------------------------------------------------------------------- data


def vae_datasets(cfg: VAEConfig) -> tuple[ImageDataset, ImageDataset]:
    """(training images, held-out images): the other split of a dataset that has splits, images
    from another seed for shapes, the last tenth (at most eval_count) of a folder or array."""
    data, seed, n_held = replace(cfg.data, labels="none"), cfg.train.seed, cfg.train.eval_count
    if data.name == "shapes":
        held = replace(data, count=n_held, limit=0)
        return build_dataset(data, seed=seed), build_dataset(held, seed=seed + HELD_OUT_SEED)
    if data.name in ("folder", "npy"):
        full = build_dataset(data, seed=seed)
        n = min(n_held, max(1, len(full) // 10))
        return replace(full, images=full.images[:-n]), replace(full, images=full.images[-n:])
    other = "test" if data.split == "train" else "train"
    held = replace(data, split=other, limit=n_held)
    return build_dataset(data, seed=seed), build_dataset(held, seed=seed)


def resolve(cfg: VAEConfig, channels: int) -> VAEModelConfig:
    """The architecture with what the data decides filled in."""
    v = cfg.vae
    if v.in_channels and v.in_channels != channels:
        raise ConfigError(f"vae.in_channels = {v.in_channels} but the images have {channels} "
                          "channels; leave it at 0 to follow the data")
    return replace(v, in_channels=channels,
                   channel_mult=v.channel_mult or DEFAULT_CHANNEL_MULT[v.down_factor])


# ----------------------------------------------------------------------------- loss


class ClassifierDistance(nn.Module):
    """LPIPS-style distance in the conv features of a shipped classifier (module docstring):
    each unit's features unit-normalised over channels, squared differences summed over
    channels, averaged over positions, images and the four units. Frozen, in eval mode (it is
    no submodule of the VAE, so `model.train()` does not reach its BatchNorms)."""

    def __init__(self, dataset: str):
        super().__init__()
        from inkfuse.metrics.classifier import INPUT_SIZE, load_classifier

        self.size = INPUT_SIZE
        self.body = copy.deepcopy(load_classifier(dataset).body).eval().requires_grad_(False)

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        h = torch.cat([x, y])
        if h.shape[-1] != self.size:
            h = F.interpolate(h, size=(self.size, self.size), mode="bilinear", antialias=True)
        total, units = h.new_zeros(()), 0
        for layer in self.body:
            h = layer(h)
            if isinstance(layer, nn.Sequential):  # a conv + BatchNorm + GELU unit
                fx, fy = F.normalize(h, dim=1).chunk(2)
                total, units = total + (fx - fy).square().sum(1).mean(), units + 1
        return total / units


def perceptual_net(cfg: VAEConfig, channels: int) -> ClassifierDistance | None:
    if not cfg.train.perceptual_weight:
        return None
    if channels != 1:
        raise ConfigError(f"train.perceptual_weight needs 1-channel images (these have "
                          f"{channels}): the only offline networks are the shipped MNIST and "
                          "Fashion-MNIST classifiers; set it to 0")
    return ClassifierDistance("mnist" if cfg.data.name == "mnist" else "fashion-mnist")


def vae_loss(x: Tensor, rec: Tensor, posterior: DiagonalGaussian, tc: VAETrainConfig,
             perceptual: ClassifierDistance | None = None) -> tuple[Tensor, dict[str, float]]:
    """(loss, its parts as floats); see the module docstring for the normalisation."""
    rec = rec.float()
    err = (rec - x).abs() if tc.recon_loss == "l1" else (rec - x).square()
    recon = err.mean()
    kl = posterior.kl().mean() / x[0].numel()
    loss = recon + tc.kl_weight * kl
    parts = {"recon": recon.item(), "kl": kl.item()}
    if perceptual is not None:
        p = perceptual(x, rec)
        loss = loss + tc.perceptual_weight * p
        parts["perceptual"] = p.item()
    return loss, parts


# ----------------------------------------------------------------------------- training


def train_vae(config: VAEConfig | dict[str, Any], out_dir: str | Path, *,
              progress: bool = True) -> dict[str, Any]:
    """Train (or resume) into `out_dir`, then evaluate and save; returns the metrics.

    A run stopped by `train.max_minutes` is evaluated and saved too, and continues from its
    checkpoint when called again.
    """
    cfg = vae_config(config)
    run, tc = Path(out_dir), cfg.train
    device = pick_device(tc.device)
    data, held = vae_datasets(cfg)
    if len(data) < tc.batch_size:
        raise TrainingError(f"the dataset has {len(data)} images, fewer than one batch of "
                            f"{tc.batch_size}; lower train.batch_size")
    mcfg = resolve(cfg, data.channels)
    perceptual = perceptual_net(cfg, data.channels)
    torch.manual_seed(seed_for(tc.seed, 0))
    model = AutoencoderKL(mcfg, data.size).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=tc.lr, weight_decay=0.0)
    start = _resume(run, model, opt, cfg)
    run.mkdir(parents=True, exist_ok=True)
    truncate_log(run / "log.jsonl", start)

    step = _fit(model, opt, data.to(device), cfg, run, start,
                perceptual.to(device) if perceptual else None, progress)
    metrics = {"steps": step, **evaluate_vae(model, held.images, data.images, tc.seed)}
    save_vae(run, model, cfg, metrics)
    reconstruction_grid(model, held.images[:GRID_COLUMNS], run / "reconstructions.png")
    with contextlib.suppress(InkfuseError):  # no matplotlib: the log is still there
        from inkfuse.viz import plot_loss

        plot_loss(run / "log.jsonl", run / "loss.png")
    return metrics


def _fit(model: AutoencoderKL, opt: torch.optim.Optimizer, data: ImageDataset, cfg: VAEConfig,
         run: Path, start: int, perceptual: ClassifierDistance | None, progress: bool) -> int:
    """The step loop from `start`; returns the step reached (< steps when out of time)."""
    tc, device = cfg.train, data.images.device
    gen = torch.Generator(device)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=tc.precision == "bf16")
    budget = f" (stops after {tc.max_minutes:g} min)" if tc.max_minutes else ""
    bar = tqdm(total=tc.steps, initial=start, disable=not progress, unit="step",
               desc=f"vae{budget}", dynamic_ncols=True)
    model.train()
    t0, step = time.monotonic(), start
    while step < tc.steps:
        lr = tc.lr * warmup_cosine(step, tc.steps, tc.warmup_steps, floor=0.1)
        for group in opt.param_groups:
            group["lr"] = lr
        torch.manual_seed(seed_for(tc.seed, 0, step, 1))
        gen.manual_seed(seed_for(tc.seed, 0, step, 2))
        idx = batch_indices(len(data), tc.batch_size, step, tc.seed, Dist()).to(device)
        x = augment(data.to_float(idx), hflip=cfg.data.hflip,
                    crop_padding=cfg.data.crop_padding, generator=gen)
        with autocast:
            rec, posterior = model(x, gen)
            loss, parts = vae_loss(x, rec, posterior, tc, perceptual)
        value = loss.item()
        if not math.isfinite(value):
            raise TrainingError(f"loss became {value} at step {step}; the last checkpoint is "
                                "kept. Lower train.lr or set train.grad_clip (e.g. 1.0)")
        loss.backward()
        if tc.grad_clip > 0:
            nn.utils.clip_grad_norm_(model.parameters(), tc.grad_clip)
        opt.step()
        opt.zero_grad(set_to_none=True)
        step += 1
        bar.update(1)

        elapsed = time.monotonic() - t0
        out_of_time = tc.max_minutes > 0 and elapsed > 60 * tc.max_minutes
        if step % tc.log_every == 0 or step == tc.steps or out_of_time:
            bar.set_postfix(loss=f"{value:.4f}")
            append_log(run / "log.jsonl", {"step": step, "loss": value, **parts, "lr": lr,
                                            "seconds": elapsed})
        if step % tc.checkpoint_every == 0 or step == tc.steps or out_of_time:
            _save_checkpoint(run, model, opt, step, cfg)
        if out_of_time:
            break
    bar.close()
    model.eval()
    return step


def _save_checkpoint(run: Path, model: AutoencoderKL, opt: torch.optim.Optimizer, step: int,
                     cfg: VAEConfig) -> None:
    """The shared writer, for its one-rename atomicity. The autoencoder has no EMA (latent
    diffusion trains it without one), so that file of the checkpoint stays empty."""
    tensors, rest = checkpoint.optimizer_tensors(opt.state_dict())
    checkpoint.save(run, model.state_dict(), {}, tensors,
                    {"step": step, "optimizer": rest, "config": cfg.to_dict()})


def _resume(run: Path, model: AutoencoderKL, opt: torch.optim.Optimizer, cfg: VAEConfig) -> int:
    """Load the checkpoint of `run`, if any, after checking it was trained with this config."""
    ckpt = checkpoint.find(run)
    if ckpt is None:
        return 0
    state = read_json(ckpt / "state.json")
    saved = state.get("config", {}) if isinstance(state, dict) else {}
    for section in ("data", "vae"):
        for key, value in cfg.to_dict()[section].items():
            theirs = saved.get(section, {}).get(key, value)
            if theirs != value and key != "limit":
                raise CheckpointError(f"{run} was trained with {section}.{key} = {theirs!r}, not "
                                      f"{value!r}; resume with the same recipe or use a new --out")
    try:
        model.load_state_dict(load_tensors(ckpt / "model.safetensors"))
        tensors = load_tensors(ckpt / "trainer.safetensors")
        opt.load_state_dict(checkpoint.optimizer_state(tensors, state["optimizer"]))
        return int(state["step"])
    except (RuntimeError, KeyError, ValueError, TypeError) as e:
        raise CheckpointError(f"{ckpt} does not fit this model ({str(e).splitlines()[0]}); "
                              "train into a new --out dir") from None


# ----------------------------------------------------------------------------- evaluation


def _batches(images: Tensor, device: torch.device, batch: int = 256) -> Iterable[Tensor]:
    """uint8 images -> float [-1, 1] batches on `device`."""
    for i in range(0, len(images), batch):
        yield images[i:i + batch].to(device).float().div(127.5).sub(1.0)


@torch.no_grad()
def reconstruct(model: AutoencoderKL, images: Tensor) -> Tensor:
    """uint8 [N, C, H, W] -> reconstructions in [-1, 1] on the CPU, decoded from the posterior
    mean: the deterministic reconstruction, as scored."""
    device = model.scale_factor.device
    return torch.cat([model.decode(model.encode(x).mean).float().clamp(-1, 1).cpu()
                      for x in _batches(images, device)])


@torch.no_grad()
def latent_scale(model: AutoencoderKL, images: Tensor, seed: int) -> float:
    """1 / std of posterior samples of `images` (uint8), as Stable Diffusion measured 0.18215."""
    device = model.scale_factor.device
    gen = torch.Generator(device).manual_seed(seed)
    z = torch.cat([model.encode(x).sample(gen).flatten() for x in _batches(images, device)])
    return 1.0 / z.std().item()


def evaluate_vae(model: AutoencoderKL, held: Tensor, train_images: Tensor, seed: int = 0
                 ) -> dict[str, Any]:
    """PSNR/SSIM (dB, [0, 1]) of reconstructions of `held`; sets and reports the latent scale,
    measured on as many `train_images` (all uint8 [N, C, H, W])."""
    rec = reconstruct(model, held).add(1).div(2)
    ref = held.float().div(255)
    scale = latent_scale(model, train_images[:len(held)], seed)
    model.scale_factor.fill_(scale)
    return {"psnr": psnr(ref, rec).mean().item(), "ssim": ssim(ref, rec).mean().item(),
            "scale_factor": scale, "latent_shape": list(model.latent_shape(held.shape[-1])),
            "eval_images": len(held)}


def reconstruction_grid(model: AutoencoderKL, images: Tensor, path: Path) -> None:
    """Originals (uint8) in the top row, their reconstructions below."""
    from inkfuse.viz import save_grid

    original = images.float().div(127.5).sub(1.0)
    save_grid(torch.cat([original, reconstruct(model, images)]), path, nrow=len(images),
              labels=["original", "reconstruction"])


# ----------------------------------------------------------------------------- save / load


def save_vae(run: Path, model: AutoencoderKL, cfg: VAEConfig, metrics: dict[str, Any]) -> None:
    """Weights (with the scale factor) first, then the JSON that describes them; each atomic."""
    run.mkdir(parents=True, exist_ok=True)
    with atomic_path(run / WEIGHTS) as tmp:
        save_tensors(tmp, model.state_dict(), kind="vae")
    write_json(run / META, {"format": FORMAT, "model": asdict(model.cfg),
                            "image_size": model.image_size, "config": cfg.to_dict(),
                            "metrics": metrics})


def load_vae(run_dir: str | Path, device: str | torch.device = "cpu") -> AutoencoderKL:
    """The trained autoencoder of a run dir from `train_vae`, in eval mode.

    Every tensor is checked against the architecture in vae.json, so a file of another model
    gives a CheckpointError naming the first mismatch rather than a shape error deep in torch.
    """
    run = Path(run_dir)
    if not (run / META).is_file() and checkpoint.find(run) is not None:
        raise CheckpointError(f"{run} holds a checkpoint but no finished model; run "
                              "`inkfuse vae train` with the same --out again to finish it")
    meta = read_json(run / META)
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CheckpointError(f"{run / META} is not an inkfuse VAE (no '{FORMAT}' tag); "
                              "train one with `inkfuse vae train`")
    try:
        mcfg = build_section(VAEModelConfig, meta["model"], "model", str(run / META))
        model = AutoencoderKL(mcfg, int(meta["image_size"]))
    except (ConfigError, KeyError, TypeError, ValueError, RuntimeError) as e:
        raise CheckpointError(f"{run / META} has a broken model section ({e}); "
                              "train the model again") from None
    weights = load_tensors(run / WEIGHTS)
    checkpoint.check_weights(weights, model.state_dict(), run / WEIGHTS, META)
    model.load_state_dict(weights)
    return model.to(device).eval()


__all__ = ["FORMAT", "META", "WEIGHTS", "VAEConfig", "VAETrainConfig", "evaluate_vae", "load_vae",
           "load_vae_recipe", "reconstruct", "train_vae", "vae_config", "vae_loss"]
