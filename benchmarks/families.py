"""The three generative families side by side: a VAE sampled from its prior, a class-conditional
GAN and the diffusion model, each trained for the same wall-clock budget on Fashion-MNIST on
this CPU, on the one training loop, then sampled and scored alike. With `--clock cpu` the budget
is the process's CPU time (`train.clock`): on one thread that is what a quiet core's wall clock
would give, and it stays equal for the three when other jobs share the machine.

    INKFUSE_DATA=../shared/data python benchmarks/families.py --minutes 10 --clock cpu \\
        --threads 1 --out benchmarks/results/families.md

Runs go to runs/families/{vae,gan,diffusion} (`--runs`); a run that has had its budget is only
sampled again, one that has not is resumed for the rest of it (`train_seconds` in its
checkpoint counts the training time across resumes). Every run gets `train.steps` = 10⁶ so that
the clock, not a step count, ends it (the cosine schedules of the VAE and diffusion recipes are
then flat over the budget), and the diffusion run draws a one-image-per-class grid at its
checkpoints rather than eight (that time counts against its budget).

The VAE is the `vae-fashion-mnist` recipe with `vae.kl_weight` raised (`--vae-kl-weight`,
default 0.1): at latent diffusion's 1e-6 the posteriors sit far from N(0, I) and prior samples
are noise. With the recipe's per-pixel L1 loss, kl_weight = b makes the loss the negative ELBO
(divided by the pixel count) of a Laplace decoder of scale b, so 0.1 is a proper VAE whose
pixels are expected to be off by about 0.1 in [-1, 1]. It is unconditional: no class accuracy,
and where a class is needed (the picture, per-class diversity) its samples are grouped by the
classifier's prediction.

Scores of `--n` class-balanced samples (sample i of class i mod 10), all in the shipped
Fashion-MNIST classifier's 128-d feature space (no Inception offline; it also sees clothes):
- fd_cls: the Fréchet distance to the 10,000 test images;
- accuracy: the share classified as the class asked for (the conditional models);
- precision / recall: k-NN manifolds (k = 3, Kynkäänniemi et al. 2019) against as many test
  images: precision = samples that look real, recall = real images the samples cover;
- classes: exp(entropy) of the predicted-class histogram, the effective number of classes
  drawn (10 for a balanced sample; mode collapse across classes lowers it);
- diversity: per class, the mean pairwise feature distance of the samples over that of real
  images of the class, averaged over classes (mode collapse within a class: well below 1);
- sharpness: the mean squared response to a 3x3 Laplacian (the high frequencies) over that of
  real images (blur: well below 1);
- ms / image: sampling time per image, batched, on `--threads` threads.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from inkfuse import pipelines, viz
from inkfuse.artifacts import checkpoint
from inkfuse.artifacts.gan import load_gan
from inkfuse.artifacts.vae import load_vae
from inkfuse.cli.app import Parser
from inkfuse.config import DataConfig, load_recipe
from inkfuse.data import build_dataset
from inkfuse.errors import ConfigError, InkfuseError
from inkfuse.metrics import classifier
from inkfuse.metrics.domain import class_accuracy, fd_cls
from inkfuse.metrics.fid import precision_recall
from inkfuse.nn.gan import generate
from inkfuse.train import train

DATASET = "fashion-mnist"
CLASSES = 10
STEPS = 1_000_000  # more than any budget reaches: the clock ends every run
PER_ROW = 4  # samples of each family per class in the picture
# family -> (recipe, the file a finished run holds, the recipe overrides of the comparison)
FAMILIES: dict[str, tuple[str, str, list[str]]] = {
    "vae": ("vae-fashion-mnist", "vae.json", []),  # + vae.kl_weight (module doc)
    "gan": ("gan-fashion-mnist", "gan.json", []),
    "diffusion": ("fashion-mnist", "checkpoint", ["sample.per_class=1"]),
}


# ----------------------------------------------------------------------------- scores


def effective_classes(predicted: Tensor, classes: int = CLASSES) -> float:
    """exp(entropy) of the histogram of predicted class ids [N]: 1 for one class, `classes`
    for a uniform spread."""
    p = torch.bincount(predicted, minlength=classes).double() / len(predicted)
    p = p[p > 0]
    return float(torch.exp(-(p * p.log()).sum()))


def _mean_pairwise(features: Tensor) -> float:
    """Mean Euclidean distance over distinct pairs of rows of [M, D] (M >= 2)."""
    d = torch.cdist(features.double(), features.double())
    m = len(features)
    return float(d.sum() / (m * (m - 1)))


def diversity_ratio(features: Tensor, groups: Tensor, real: Tensor, real_groups: Tensor
                    ) -> float:
    """Mean over classes of (mean pairwise feature distance of the samples of the class) /
    (the same of the real images of the class); classes with fewer than 2 of either are left
    out (NaN if none is left). Identical samples give 0, samples as varied as the data 1."""
    ratios = []
    for c in torch.unique(real_groups):
        fake_c, real_c = features[groups == c], real[real_groups == c]
        if len(fake_c) >= 2 and len(real_c) >= 2:
            ratios.append(_mean_pairwise(fake_c) / _mean_pairwise(real_c))
    return float(np.mean(ratios)) if ratios else math.nan


LAPLACIAN = torch.tensor([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]])


def high_frequency_energy(images: Tensor) -> float:
    """Mean squared 3x3-Laplacian response of images [N, 1, H, W] in [-1, 1] (the inside
    pixels: no padding): what blur takes away."""
    return float(F.conv2d(images.float(), LAPLACIAN.view(1, 1, 3, 3)).square().mean())


def score(images: Tensor, labels: Tensor | None, real: Tensor, real_labels: Tensor
          ) -> dict[str, float]:
    """The table's scores of samples [N, 1, 28, 28] in [-1, 1] (module doc); `labels` are the
    asked classes (None: unconditional), `real` are as many test images with their labels."""
    model = classifier.load_classifier(DATASET)
    feats, real_feats = classifier.features(model, images), classifier.features(model, real)
    predicted = classifier.predict(model, images)
    precision, recall = precision_recall(real_feats.numpy(), feats.numpy())
    return {
        "fd_cls": fd_cls(images, DATASET),
        "accuracy": math.nan if labels is None else class_accuracy(images, labels, DATASET),
        "precision": precision, "recall": recall,
        "classes": effective_classes(predicted),
        "diversity": diversity_ratio(feats, predicted if labels is None else labels,
                                     real_feats, real_labels),
        "sharpness": high_frequency_energy(images) / high_frequency_energy(real),
    }


# ----------------------------------------------------------------------------- training


def trained_seconds(run: Path) -> float:
    """The training time in the run's latest checkpoint (0 without one)."""
    ckpt = checkpoint.find(run)
    return float(checkpoint.read_json(ckpt / "state.json").get("train_seconds", 0.0)) if ckpt \
        else 0.0


def train_family(family: str, run: Path, minutes: float, kl_weight: float,
                 progress: bool, clock: str = "wall") -> None:
    """Train (or resume) `family` into `run` until it has had `minutes` of training, counted by
    `clock` (`train.clock`)."""
    recipe, done_file, extra = FAMILIES[family]
    if family == "vae":
        extra = [*extra, f"vae.kl_weight={kl_weight}"]
    left = 60 * minutes - trained_seconds(run)
    if left <= 0 and (run / done_file).exists():
        return
    # a run past its budget but not finished (killed in `finish`) trains one step and finishes
    config = load_recipe(recipe, [*extra, f"train.steps={STEPS}", f"train.clock='{clock}'",
                                  f"train.max_minutes={max(left / 60, 1e-4)}"])
    train(config, run, progress=progress)


# ----------------------------------------------------------------------------- sampling


def timed(draw: Callable[[], Tensor], n: int) -> tuple[Tensor, float]:
    """(images, milliseconds per image) of one call of `draw`."""
    start = time.perf_counter()
    images = draw()
    return images.float().clamp(-1, 1), 1000 * (time.perf_counter() - start) / n


@torch.no_grad()
def sample_family(family: str, run: Path, labels: Tensor, seed: int
                  ) -> tuple[Tensor, float]:
    n = len(labels)
    if family == "vae":
        vae = load_vae(run)
        gen = torch.Generator().manual_seed(seed)
        return timed(lambda: torch.cat([vae.sample_prior(len(chunk), gen)
                                        for chunk in labels.split(500)]), n)
    if family == "gan":
        generator, _ = load_gan(run)
        return timed(lambda: generate(generator, labels, seed), n)
    diffusion = pipelines.load_run(run)
    s = diffusion.config.sample
    options = pipelines.recipe_options(diffusion, s.sampler)
    return timed(lambda: pipelines.sample(
        diffusion, n, labels=labels, sampler=s.sampler, steps=s.steps, guidance=s.guidance,
        rescale=s.guidance_rescale, seed=seed, progress=False, **options), n)


def picture_rows(images: Tensor, groups: Tensor, per_row: int = PER_ROW) -> list[Tensor]:
    """Per class, the first `per_row` images of that group [per_row, C, H, W], black where the
    family drew fewer (a class the unconditional VAE left out shows as black)."""
    rows = []
    for c in range(CLASSES):
        picked = images[groups == c][:per_row]
        pad = torch.full((per_row - len(picked), *images.shape[1:]), -1.0)
        rows.append(torch.cat([picked, pad]))
    return rows


# ----------------------------------------------------------------------------- report


def table(results: dict[str, dict[str, float]], minutes: float, n: int, clock: str) -> list[str]:
    def cell(value: float, fmt: str) -> str:
        return "—" if math.isnan(value) else format(value, fmt)

    lines = ["| family | steps | fd_cls ↓ | accuracy ↑ | precision ↑ | recall ↑ | classes | "
             "diversity | sharpness | ms / image |", "|---|---:|---:|---:|---:|---:|---:|---:|"
             "---:|---:|"]
    for family, r in results.items():
        lines.append(f"| {family} | {r['steps']:.0f} | {r['fd_cls']:.2f} | "
                     f"{cell(r['accuracy'], '.3f')} | {r['precision']:.3f} | {r['recall']:.3f} "
                     f"| {r['classes']:.2f} | {cell(r['diversity'], '.2f')} | "
                     f"{r['sharpness']:.2f} | {r['ms_per_image']:.2f} |")
    budget = "CPU-minutes" if clock == "cpu" else "min"
    return [f"# Generative families on Fashion-MNIST, {minutes:g} {budget} of training each", "",
            f"{n} class-balanced samples of each (the VAE: unconditional, from its prior); "
            "scores in the shipped classifier's feature space (benchmarks/families.py).", "",
            *lines]


def notes(results: dict[str, dict[str, float]]) -> list[str]:
    """What the numbers say about mode collapse and blur, in words."""
    out = ["", "## Mode collapse and blur", ""]
    for family, r in results.items():
        said = []
        if r["classes"] < 8:
            said.append(f"draws about {r['classes']:.1f} of the 10 classes (mode collapse "
                        "across classes)")
        if not math.isnan(r["diversity"]) and r["diversity"] < 0.7:
            said.append(f"its samples of a class vary {r['diversity']:.2f} times as much as "
                        "real ones (mode collapse within classes)")
        if r["sharpness"] < 0.7:
            said.append(f"keeps {r['sharpness']:.2f} of the real images' high-frequency energy "
                        "(blur)")
        out.append(f"- {family}: " + ("; ".join(said) if said else
                                      "no sign of mode collapse or blur by these measures") + ".")
    return out


def main(argv: list[str] | None = None) -> int:
    p = Parser(prog="families", description=__doc__.splitlines()[0])
    p.add_argument("--minutes", type=float, default=10.0, help="training budget of each family")
    p.add_argument("--n", type=int, default=1000, help="samples scored per family")
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/families.md"))
    p.add_argument("--runs", type=Path, default=Path("runs/families"))
    p.add_argument("--vae-kl-weight", type=float, default=0.1)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    p.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                   help="what the budget counts (train.clock): 'cpu' gives every family the same "
                        "compute when other jobs share the machine (use with --threads 1)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quiet", action="store_true")
    try:
        args = p.parse_args(argv)
        run(args)
    except InkfuseError as e:
        print(f"families: error: {' '.join(str(e).split())}", file=sys.stderr)
        return 1
    return 0


def run(args: argparse.Namespace) -> None:
    if not (math.isfinite(args.minutes) and args.minutes > 0):
        raise ConfigError(f"--minutes must be a positive number, got {args.minutes}")
    if args.n < 4:
        raise ConfigError(f"--n must be at least 4 (precision/recall with k = 3), got {args.n}")
    if not 0 < args.vae_kl_weight <= 1:
        raise ConfigError(f"--vae-kl-weight must be in (0, 1], got {args.vae_kl_weight}")
    if args.threads < 0:
        raise ConfigError(f"--threads must be 0 (torch's default) or more, got {args.threads}")
    if args.out.suffix != ".md":
        raise ConfigError(f"--out {args.out}: give a Markdown file (.md); the picture goes "
                          "beside it as .png")
    if args.threads:
        torch.set_num_threads(args.threads)

    test = build_dataset(DataConfig(name=DATASET, split="test", size=28))
    pick = torch.from_numpy(np.random.default_rng(args.seed).choice(len(test), args.n,
                                                                     replace=False))
    real, real_labels = test.to_float(pick), test.labels[pick]
    labels = torch.arange(args.n) % CLASSES
    results, columns = {}, [picture_rows(real, real_labels)]
    for family in FAMILIES:
        out = args.runs / family
        train_family(family, out, args.minutes, args.vae_kl_weight, not args.quiet, args.clock)
        images, ms = sample_family(family, out, labels, args.seed)
        conditional = family != "vae"
        results[family] = {**score(images, labels if conditional else None, real, real_labels),
                           "ms_per_image": ms,
                           "steps": checkpoint.read_json(checkpoint.find(out) / "state.json")
                           ["step"]}
        groups = labels if conditional else classifier.predict(
            classifier.load_classifier(DATASET), images)
        columns.append(picture_rows(images, groups))

    picture = args.out.with_suffix(".png")
    grid = torch.cat([torch.cat([col[c] for col in columns]) for c in range(CLASSES)])
    viz.save_grid(grid, picture, nrow=PER_ROW * len(columns), labels=test.class_names)
    lines = [*table(results, args.minutes, args.n, args.clock), "",
             f"![real | VAE (by predicted class) | GAN | diffusion]({picture.name})",
             f"Columns of {PER_ROW}: real test images, VAE (grouped by predicted class; black: "
             "fewer drawn), GAN, diffusion.", *notes(results)]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    sys.exit(main())
