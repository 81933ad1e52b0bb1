"""What a diffusion run's samples are scored with while it trains (`train.eval_every`) and when
its post-hoc EMA lengths are compared (`inkfuse ema RUN --sweep`): the metric that fits its
data, on a small sample drawn with a fixed seed, through `metrics.evaluation.evaluate`.

- mnist, fashion-mnist: `fd_cls` (the Fréchet distance in the shipped classifier's features:
  cheap, and it sees digits and clothes), and `accuracy` of class-conditional samples;
- shapes, class-conditional: the shapes checker's `accuracy` (exact: no learned judge);
- anything else: `fid` against FID_REFERENCE_N real images, if the Inception weights are there.

A small n biases FID and FD_cls upwards (Chong & Forsyth 2020, "Effectively Unbiased FID"), by
an amount that depends on n: compare scores of the same n only, as the curve of one run does.
The same seed at every step draws the same starting noise, so that the curve shows the model
changing and not the sample.
"""

from __future__ import annotations

from typing import Any

from inkfuse.config import Config
from inkfuse.errors import CheckpointError, ConfigError, DataError, TrainingError
from inkfuse.metrics import classifier, fid
from inkfuse.metrics.evaluation import evaluate, parse_metrics
from inkfuse.train.loop import seed_for

# Real images behind an in-training FID: Inception takes ~25 images/s in bf16 on a 2-core CPU
# (~14 in fp32), so these cost under a minute once (the statistics are cached), the whole test
# split ~7 minutes.
FID_REFERENCE_N = 1000
EVAL_SEED_PART = 1_000_033  # the eval sample's seed: seed_for(train.seed, this)
# what one metric name reports (`evaluate`'s keys); every other reports its own name. bpd is
# scored by its variational bound only: the ODE estimator costs many model calls per image
# (`inkfuse eval --metric bpd` gives both)
_RESULTS = {"pr": ("precision", "recall"), "kid": ("kid",), "bpd": ("bpd_vlb",)}
HIGHER_IS_BETTER = ("accuracy", "precision", "recall")


def metrics_for(config: Config) -> list[str]:
    """The metrics that fit the data of a (resolved) diffusion recipe; see the module doc."""
    d = config.data
    if d.low_res:
        raise ConfigError("super-resolution runs (data.low_res) are not scored on their own "
                          "samples: they need low-res inputs to upsample")
    class_labels = d.labels == "class" and config.model.cond_dim > 0
    if d.name in classifier.DATASETS:
        return ["fd_cls", *(["accuracy"] if class_labels else [])]
    if d.name == "shapes" and class_labels:
        return ["accuracy"]
    return ["fid"]


def check_metrics(metrics: list[str]) -> None:
    """Fail before any training or sampling if a metric's network is not at hand (the
    Inception file, which is looked up, and downloaded once unless INKFUSE_OFFLINE is set)."""
    if any(m in metrics for m in ("fid", "kid", "pr")):
        try:
            fid.load_inception()
        except DataError as e:
            raise TrainingError(f"scoring with FID needs the Inception weights: {e}") from None


def result_keys(metrics: list[str]) -> list[str]:
    """The names of the scores `score` returns for `metrics` (pr gives precision and recall)."""
    return [key for m in metrics for key in _RESULTS.get(m, (m,))]


def eval_seed(config: Config) -> int:
    return seed_for(config.train.seed, EVAL_SEED_PART)


def score(run: Any, metrics: list[str], n: int, seed: int) -> dict[str, float | None]:
    """{score name: value} of `n` samples of `run` (a `Run` in memory or a run dir), drawn with
    the recipe's [sample] settings from `seed`; every value None when the samples are not
    finite (early EMA weights of a run that overflows), which is what a curve should show
    rather than a stopped run."""
    names = parse_metrics(metrics)
    reference_n = FID_REFERENCE_N if any(m in names for m in ("fid", "kid", "pr")) else None
    keys = result_keys(names)
    bpd = {"bpd_estimators": ("vlb",)} if "bpd" in names else {}
    try:
        results = evaluate(run, names, n=n, seed=seed, progress=False, reference_n=reference_n,
                           **bpd)
    except CheckpointError:  # `pipelines.draw` refuses non-finite samples
        return dict.fromkeys(keys)
    missing = [k for k in keys if not isinstance(results.get(k), int | float)]
    if missing:
        raise ConfigError(f"metric {missing[0]!r} gives no single number to compare; choose "
                          f"from fid, kid, pr, accuracy, fd_cls, bpd")
    return {k: float(results[k]) for k in keys}


def better(key: str, a: float | None, b: float | None) -> bool:
    """Whether score `a` beats `b` (None, not computed, loses to any number)."""
    if a is None:
        return False
    if b is None:
        return True
    return a > b if key in HIGHER_IS_BETTER else a < b
