"""Score a trained run: draw samples, then compute the asked metrics against its dataset.

    results = evaluate("runs/mnist", ["fid", "accuracy", "fd_cls"], n=1000, steps=50)

Metrics (names as on the command line):
- fid, kid, pr: Inception FID, KID (mean and std over subsets) and precision/recall, against the
  dataset's test split at the run's image size (shapes: held-out scenes); the reference
  statistics are cached (`inkfuse.metrics.fid.reference_stats`).
- accuracy: the share of class-conditional samples showing the asked class: the domain
  classifier for mnist / fashion-mnist, the shapes checker's shape kind for shapes.
- fd_cls: the Fréchet distance in the domain classifier's feature space (mnist, fashion-mnist).
- bpd: bits per dimension of n held-out test images, by the variational bound and by the
  probability-flow ODE, each with its standard error (`inkfuse.metrics.likelihood`; a latent
  run's numbers are per latent dimension). Draws no samples.
- nn: the copy check: each sample's nearest training images and the share of samples closer to
  the training set than 95% of training images are to the rest of it (`inkfuse.metrics.copying`),
  with real test images' share beside it; `nn_grid` writes samples beside their neighbours.
`reference_n` limits the real images of both Fréchet distances (default: the whole test split).
Class-conditional runs are sampled with balanced labels (sample i asks for class i mod C).
"""

from __future__ import annotations

import os
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from inkfuse import pipelines, viz
from inkfuse.config import DataConfig, from_dict
from inkfuse.data import build_dataset
from inkfuse.errors import ConfigError, DataError
from inkfuse.metrics import classifier, copying, fid, likelihood
from inkfuse.metrics.domain import class_accuracy, fd_cls
from inkfuse.metrics.shapes_check import kind_accuracy

METRICS = ("fid", "kid", "pr", "accuracy", "fd_cls", "bpd", "nn")
_INCEPTION_METRICS = ("fid", "kid", "pr")
_UNSAMPLED = ("bpd",)  # scored on real test images, not on samples


def parse_metrics(metrics: str | list[str] | tuple[str, ...]) -> list[str]:
    """["fid", "kid"] from "fid,kid" or a list; unknown names are a ConfigError."""
    names = metrics.split(",") if isinstance(metrics, str) else list(metrics)
    names = list(dict.fromkeys(m.strip().lower().replace("-", "_") for m in names if m.strip()))
    if not names:
        raise ConfigError(f"no metric given (choose from {', '.join(METRICS)})")
    for m in names:
        if m not in METRICS:
            raise ConfigError(f"unknown metric {m!r} (choose from {', '.join(METRICS)})")
    return names


def _check_applicable(names: list[str], data: DataConfig, n: int, labelled: bool) -> None:
    """Refuse metrics that cannot be computed, before any sampling is spent."""
    if "bpd" in names and n < 2:
        raise ConfigError(f"bpd needs --n >= 2 test images for a standard error, got {n}")
    if any(m in names for m in _INCEPTION_METRICS) and n < 2:
        raise ConfigError(f"fid/kid/pr need --n >= 2 samples (got {n}; 1,000+ is usual)")
    if "pr" in names and n <= 3:
        raise ConfigError(f"precision/recall (k = 3) needs --n >= 4 samples, got {n}")
    if "fd_cls" in names:
        if data.name not in classifier.DATASETS:
            raise ConfigError(f"fd_cls needs a domain classifier, which exists for "
                              f"{', '.join(classifier.DATASETS)}, not {data.name!r}")
        if n < 2:
            raise ConfigError(f"fd_cls needs --n >= 2 samples, got {n}")
    if "accuracy" in names:
        if data.name not in (*classifier.DATASETS, "shapes"):
            raise ConfigError(f"accuracy needs a domain classifier or the shapes checker "
                              f"(mnist, fashion-mnist, shapes), not {data.name!r}")
        if not labelled:
            raise ConfigError("accuracy needs class-conditional samples: a run trained with "
                              "data.labels = 'class' (or an .npz file with 'labels')")


# channels and number of classes of the datasets with a fixed kind of image
_DATASET_KIND = {"mnist": (1, 10), "fashion-mnist": (1, 10), "cifar10": (3, 10), "shapes": (3, 4)}
_KINDS = {1: "grayscale", 3: "RGB"}
MIN_SIZE = 8  # below this, Inception and the domain classifiers see nothing but blur


def _check_images_for(x: torch.Tensor, data: DataConfig) -> None:
    """Images [N, C, H, W] of the kind `data`'s dataset holds: its channels, square, >= 8 px."""
    h, w = x.shape[-2:]
    if h != w or h < MIN_SIZE:
        raise DataError(f"the images are {w}x{h}: they must be square and at least "
                        f"{MIN_SIZE}x{MIN_SIZE} to be scored against {data.name}")
    channels = _DATASET_KIND.get(data.name, (None, None))[0]
    if channels is not None and x.shape[1] != channels:
        raise DataError(f"the images are {_KINDS.get(x.shape[1], x.shape[1])} ({x.shape[1]} "
                        f"channels) but {data.name} is {_KINDS[channels]}: score them against "
                        "the dataset they were drawn for (--dataset)")


def _check_labels(labels: Any, n: int, data: DataConfig) -> torch.Tensor:
    """Class ids as int64 [n]: integers (not floats, strings or bools) in the dataset's range."""
    array = np.asarray(labels)
    if array.dtype == bool or not np.issubdtype(array.dtype, np.integer):
        raise DataError(f"labels must be integer class ids, got {array.dtype} values "
                        "(write them as int64, as `inkfuse sample --out x.npz` does)")
    array = array.reshape(-1)
    if len(array) != n:
        raise DataError(f"got {n} images but {len(array)} labels")
    classes = _DATASET_KIND.get(data.name, (None, None))[1]
    if len(array) and (array.min() < 0 or (classes is not None and array.max() >= classes)):
        bad = int(array.min() if array.min() < 0 else array.max())
        top = f"0..{classes - 1}" if classes is not None else ">= 0"
        raise DataError(f"label {bad} is not a class of {data.name} (class ids are {top})")
    return torch.from_numpy(array.astype(np.int64))


def evaluate_images(
    images: Any, labels: Any, data: DataConfig, metrics: str | list[str], *,
    reference_n: int | None = None, resize: str = "clean",
    fid_weights: str | os.PathLike[str] | None = None, progress: bool = True,
    kid_subset: int = 1000, kid_subsets: int = 100, seed: int = 0, trust_weights: bool = False,
    train_seed: int = 0, nn_grid: str | os.PathLike[str] | None = None,
    fid_precision: str = "auto",
) -> dict[str, Any]:
    """The asked metrics of given images (uint8 [N, C, H, W] or floats in [-1, 1]) against the
    dataset `data` describes (its name, size, and for shapes max_objects). `trust_weights`
    lets an Inception file other than the standard one be loaded (TorchScript can run code).
    The copy check (nn) compares with `data`'s training images, drawn with `train_seed` as
    training drew them (shapes), and writes its grid to `nn_grid` if given. `fid_precision`:
    what the Inception runs in (`fid.load_inception`; the network id it gives is returned as
    "fid_network", since bf16 and fp32 FIDs differ by up to ~1.2%)."""
    names = parse_metrics(metrics)
    if "bpd" in names:
        raise ConfigError("bpd scores a model, not images: give a run dir, not an .npz")
    x = fid.as_uint8_nchw(images, "samples")
    n = len(x)
    _check_applicable(names, data, n, labels is not None)
    _check_images_for(x, data)
    if labels is not None:
        labels = _check_labels(labels, n, data)
    results: dict[str, Any] = {}
    if any(m in names for m in _INCEPTION_METRICS):
        net = fid.load_inception(fid_weights, trust=trust_weights,  # fails fast if missing
                                 precision=fid_precision)
        results["fid_network"] = net.id
        test = replace(data, split="test", limit=0, hflip=False, crop_padding=0)
        ref = fid.reference_stats(test, n=reference_n, size=x.shape[-1], resize=resize,
                                  network=net, progress=progress)
        fid.check_channels(x, ref, "the samples")
        feats = fid.inception_features(x, resize=resize, network=net, progress=progress,
                                       desc="sample features")
        results["fid_reference"] = ref.key
        results["fid_resize"] = resize
        if "fid" in names:
            results["fid"] = fid.fid_from_features(ref.features, feats)
        if "kid" in names:
            results["kid"], results["kid_std"] = fid.kid(ref.features, feats, kid_subset,
                                                         kid_subsets, seed)
        if "pr" in names:  # equal set sizes: the k-NN radii depend on how many points there are
            real = ref.features
            if len(real) > n:
                real = real[np.random.default_rng(seed).choice(len(real), n, replace=False)]
            results["precision"], results["recall"] = fid.precision_recall(real, feats)
    if "accuracy" in names:
        if data.name == "shapes":
            results["accuracy"] = kind_accuracy(x, labels, max_objects=data.max_objects)
        else:
            results["accuracy"] = class_accuracy(x, labels, data.name)
    if "fd_cls" in names:
        results["fd_cls"] = fd_cls(x, data.name, reference_n)
    if "nn" in names:
        results |= _copy_check(x, data, seed, train_seed, nn_grid)
    return results


def _copy_check(x: torch.Tensor, data: DataConfig, seed: int, train_seed: int,
                grid: str | os.PathLike[str] | None) -> dict[str, Any]:
    """The copy check of uint8 samples `x` against `data`'s training images (unaugmented) and,
    for comparison, as many of its test images."""
    train = build_dataset(replace(data, split="train", hflip=False, crop_padding=0),
                          seed=train_seed).images
    if train.shape[1:] != x.shape[1:]:
        raise DataError(f"the samples are {tuple(x.shape[1:])} but {data.name}'s training "
                        f"images are {tuple(train.shape[1:])}: compare with their own dataset")
    heldout = likelihood.test_split(data, len(x)).images
    report = copying.copy_check(x, train, heldout=heldout, seed=seed)
    out = {"nn_share": report.share, "nn_heldout_share": report.heldout_share,
           "nn_quantile": copying.QUANTILE, "nn_threshold": report.threshold,
           "nn_median_ratio": report.median_ratio, "nn_train_images": len(train)}
    if grid is not None:
        tiles, labels = copying.neighbour_grid(x, train, report)
        viz.save_grid(tiles.float() / 127.5 - 1, grid, nrow=1 + report.neighbours.shape[1],
                      labels=labels)
        out["nn_grid"] = str(grid)
    return out


def evaluate(
    run: Any, metrics: str | list[str], n: int = 1000, sampler: str | None = None,
    steps: int | None = None, guidance: float | None = None, seed: int = 0, *,
    eta: float | None = None, ema: bool = True, batch_size: int = 256,
    reference_n: int | None = None, resize: str = "clean",
    fid_weights: str | os.PathLike[str] | None = None, device: str | torch.device = "cpu",
    progress: bool = True, trust_weights: bool = False, bpd_estimators: tuple[str, ...] =
    likelihood.ESTIMATORS, bpd_t_samples: int = 8, bpd_ode_steps: int = 32,
    bpd_solver: str = "rk4", bpd_variance: str = "posterior",
    nn_grid: str | os.PathLike[str] | None = None, fid_precision: str = "auto",
) -> dict[str, Any]:
    """Sample `n` images from `run` (a `Run` or a run dir) and compute `metrics` (see the
    module doc). Sampler, steps, guidance and eta default to the run's [sample] settings.
    bpd scores `n` test images instead, with the `bpd_*` settings (`likelihood.run_bpd`);
    asked alone, it draws no samples.

    Returns {"fid": ..., "kid": ..., "kid_std": ..., "precision": ..., "recall": ...,
    "accuracy": ..., "fd_cls": ..., "bpd_vlb": ..., "bpd_vlb_se": ..., "bpd_ode": ...,
    "nn_share": ...} (those asked) plus the settings used."""
    names = parse_metrics(metrics)
    if not isinstance(n, int) or n < 1:
        raise ConfigError(f"--n must be a positive integer, got {n!r}")
    bpd = {"estimators": tuple(bpd_estimators), "t_samples": bpd_t_samples,
           "ode_steps": bpd_ode_steps, "solver": bpd_solver, "variance": bpd_variance}
    if "bpd" in names:
        likelihood.check_options(**bpd)
    if not isinstance(run, pipelines.Run):
        run = pipelines.load_run(run, ema=ema, device=device, trust=trust_weights)
    cfg = run.config
    class_labels = cfg.model.cond_dim > 0 and cfg.data.labels == "class"
    _check_applicable(names, cfg.data, n, class_labels)
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigError(f"--batch-size must be a positive integer, got {batch_size!r}")
    start = time.time()
    head = {"run": str(Path(run.dir)), "dataset": cfg.data.name, "size": cfg.data.size, "n": n}
    results: dict[str, Any] = {}
    if "bpd" in names:
        results |= likelihood.run_bpd(run, n, seed=seed, batch_size=batch_size,
                                      progress=progress, **bpd)
    sampled = [m for m in names if m not in _UNSAMPLED]
    if not sampled:
        return {**head, "seed": seed, "ema": ema, **results,
                "seconds": round(time.time() - start, 2)}
    if any(m in names for m in _INCEPTION_METRICS):
        # a missing or untrusted file fails before minutes of sampling
        fid.load_inception(fid_weights, trust=trust_weights, precision=fid_precision)
    s = cfg.sample
    settings = {
        "sampler": s.sampler if sampler is None else sampler,
        "steps": s.steps if steps is None else steps,
        "guidance": s.guidance if guidance is None else guidance,
    }
    # the recipe's eta where the sampler takes one (ddim); an --eta it does not take is an error
    settings |= pipelines.recipe_options(run, settings["sampler"])
    if eta is not None:
        settings["eta"] = eta
    if not isinstance(settings["steps"], int) or settings["steps"] < 1:
        raise ConfigError(f"--steps must be at least 1, got {settings['steps']!r}")
    if settings["guidance"] < 0:
        raise ConfigError(f"--guidance must be >= 0, got {settings['guidance']}")
    labels = torch.arange(n) % cfg.model.cond_dim if class_labels else None
    sample_start = time.time()
    samples = pipelines.sample(run, n, labels=labels, seed=seed, batch_size=batch_size,
                               progress=progress, rescale=s.guidance_rescale, **settings)
    sample_seconds = time.time() - sample_start
    images = torch.from_numpy(viz.to_uint8(samples)).permute(0, 3, 1, 2)  # as `inkfuse sample`
    results |= evaluate_images(images, labels, cfg.data, sampled, reference_n=reference_n,
                               resize=resize, fid_weights=fid_weights, progress=progress,
                               seed=seed, trust_weights=trust_weights,
                               train_seed=cfg.train.seed, nn_grid=nn_grid,
                               fid_precision=fid_precision)
    return {
        **head, **settings, "seed": seed, "ema": ema, **results,
        "sample_seconds": round(sample_seconds, 2),
        "seconds": round(time.time() - start, 2),
    }


def evaluate_npz(
    path: str | os.PathLike[str], metrics: str | list[str], dataset: str, *,
    max_objects: int = 1, reference_n: int | None = None, resize: str = "clean",
    fid_weights: str | os.PathLike[str] | None = None, progress: bool = True, seed: int = 0,
    trust_weights: bool = False, nn_grid: str | os.PathLike[str] | None = None,
    fid_precision: str = "auto",
) -> dict[str, Any]:
    """The metrics of images saved by `inkfuse sample --out x.npz` against `dataset` (the copy
    check: against its training split as a default recipe draws it)."""
    if "bpd" in parse_metrics(metrics):
        raise ConfigError("bpd scores a model, not images: give a run dir, not an .npz")
    images, labels = fid.load_npz_images(path)
    try:
        data = DataConfig(name=dataset, size=images.shape[-1], max_objects=max_objects)
        data = from_dict({"data": vars(data)}, source="--dataset").data
    except ConfigError as e:
        raise ConfigError(f"--dataset: {e}") from None
    results = evaluate_images(images, labels, data, metrics, reference_n=reference_n,
                              resize=resize, fid_weights=fid_weights, progress=progress,
                              seed=seed, trust_weights=trust_weights, nn_grid=nn_grid,
                              fid_precision=fid_precision)
    return {"npz": str(path), "dataset": dataset, "size": images.shape[-1], "n": len(images),
            **results}


__all__ = ["METRICS", "evaluate", "evaluate_images", "evaluate_npz", "parse_metrics"]
