"""Small CNN classifiers for MNIST and Fashion-MNIST, shipped as weights in `metrics/weights/`.

They score samples of models trained on those datasets: the accuracy of class-conditional
samples (is a "7" classified as a 7?) and the Fréchet distance in their 128-d penultimate
feature space (FD_cls, `inkfuse.metrics.domain`), which suits 28 x 28 digits better than
Inception's ImageNet features. `scripts/train_classifier.py` trains them; the JSON beside each
`.safetensors` records the architecture, test accuracy, command and date. Loaded with safetensors
only, never pickle.

Input: 1 x 28 x 28 images in [-1, 1] (or uint8). Other sizes are resized to 28 (bilinear with
antialiasing, as `inkfuse.data` resizes datasets) and RGB becomes gray by averaging channels.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from inkfuse.errors import ConfigError, DataError

DATASETS = ("mnist", "fashion-mnist")
WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
INPUT_SIZE = 28


def _unit(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out),
                         nn.GELU())


class Classifier(nn.Module):
    """conv32 - conv32 - pool - conv64 - pool - conv64 - pool(3x3) - linear 128 (the features) -
    linear 10; every conv 3x3 + BatchNorm + GELU. About 140k parameters."""

    def __init__(self, num_classes: int = 10, width: int = 32, feature_dim: int = 128,
                 dropout: float = 0.2):
        super().__init__()
        w = width
        self.body = nn.Sequential(
            _unit(1, w), _unit(w, w), nn.MaxPool2d(2),            # 28 -> 14
            _unit(w, 2 * w), nn.MaxPool2d(2),                      # 14 -> 7
            _unit(2 * w, 2 * w), nn.MaxPool2d(2),                  # 7 -> 3
            nn.Flatten(),
        )
        self.embed = nn.Sequential(nn.Linear(2 * w * 9, feature_dim, bias=False),
                                   nn.BatchNorm1d(feature_dim), nn.GELU())
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(feature_dim, num_classes))
        self.arch = {"kind": "cnn-v1", "num_classes": num_classes, "width": width,
                     "feature_dim": feature_dim, "dropout": dropout}

    def features(self, x: Tensor) -> Tensor:
        """The 128-d penultimate features of images [N, 1, 28, 28] in [-1, 1]."""
        return self.embed(self.body(x))

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))


def prepare(images: Any) -> Tensor:
    """Any batch of images -> float [N, 1, 28, 28] in [-1, 1] (see the module doc)."""
    x = torch.as_tensor(images)
    if x.ndim == 3:
        x = x[:, None]
    if x.ndim == 4 and x.shape[1] not in (1, 3) and x.shape[-1] in (1, 3):
        x = x.permute(0, 3, 1, 2)  # NHWC, as in `inkfuse sample` .npz files
    if x.ndim != 4 or x.shape[1] not in (1, 3):
        raise DataError(f"the classifier needs images [N, 1 or 3, H, W], got {tuple(x.shape)}")
    if x.dtype == torch.uint8:
        x = x.float() / 127.5 - 1
    elif x.is_floating_point():
        x = x.detach().float().nan_to_num(0.0).clamp(-1, 1)
    else:
        raise DataError(f"the classifier needs uint8 images or floats in [-1, 1], got {x.dtype}")
    if x.shape[1] == 3:
        x = x.mean(1, keepdim=True)
    if x.shape[-2:] != (INPUT_SIZE, INPUT_SIZE):
        x = F.interpolate(x, size=(INPUT_SIZE, INPUT_SIZE), mode="bilinear", antialias=True,
                          align_corners=False)
    return x


def weights_paths(dataset: str) -> tuple[Path, Path]:
    return WEIGHTS_DIR / f"{dataset}.safetensors", WEIGHTS_DIR / f"{dataset}.json"


def read_info(dataset: str) -> dict[str, Any]:
    """The JSON record of a shipped classifier (architecture, test accuracy, command, date)."""
    if dataset not in DATASETS:
        raise ConfigError(f"no domain classifier for dataset {dataset!r} "
                          f"(there are: {', '.join(DATASETS)})")
    _, info_path = weights_paths(dataset)
    try:
        return json.loads(info_path.read_text())
    except FileNotFoundError:
        raise DataError(f"{info_path} is missing; train it with "
                        f"`python scripts/train_classifier.py --dataset {dataset}`") from None
    except (OSError, ValueError) as e:
        raise DataError(f"{info_path} is damaged ({e}); retrain with "
                        f"`python scripts/train_classifier.py --dataset {dataset}`") from None


@functools.lru_cache(maxsize=4)
def load_classifier(dataset: str) -> Classifier:
    """The shipped classifier for `dataset` (mnist or fashion-mnist), in eval mode on the CPU."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    info = read_info(dataset)
    arch = dict(info.get("architecture", {}))
    if arch.pop("kind", None) != "cnn-v1":
        raise DataError(f"{weights_paths(dataset)[1]} describes an unknown architecture; "
                        "retrain with scripts/train_classifier.py")
    model = Classifier(**arch)
    path = weights_paths(dataset)[0]
    try:
        state = load_file(str(path))
        model.load_state_dict(state)
    except FileNotFoundError:
        raise DataError(f"{path} is missing; train it with "
                        f"`python scripts/train_classifier.py --dataset {dataset}`") from None
    except (SafetensorError, OSError, RuntimeError) as e:
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise DataError(f"{path} is damaged or does not match its JSON ({first}); retrain with "
                        f"`python scripts/train_classifier.py --dataset {dataset}`") from None
    return model.eval()


@torch.inference_mode()
def _run(model: Classifier, images: Any, fn: str, batch_size: int) -> Tensor:
    x = prepare(images)
    device = next(model.parameters()).device
    return torch.cat([getattr(model, fn)(x[lo : lo + batch_size].to(device)).float().cpu()
                      for lo in range(0, len(x), batch_size)]) if len(x) else torch.empty(0)


def logits(model: Classifier, images: Any, batch_size: int = 1000) -> Tensor:
    """Class logits [N, 10]."""
    return _run(model, images, "forward", batch_size)


def predict(model: Classifier, images: Any, batch_size: int = 1000) -> Tensor:
    """Predicted class ids [N]."""
    return logits(model, images, batch_size).argmax(1)


def features(model: Classifier, images: Any, batch_size: int = 1000) -> Tensor:
    """Penultimate features [N, 128]."""
    return _run(model, images, "features", batch_size)


__all__ = ["DATASETS", "Classifier", "features", "load_classifier", "logits", "predict",
           "prepare", "read_info"]
