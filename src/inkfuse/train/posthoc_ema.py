"""Post-hoc EMA after training (Karras et al. 2024, EDM2, Sec. 3 and Appendix C.2): from the
snapshots of a run's power-function EMAs (`train.ema_snapshots_every`), reconstruct the EMA of
any width σ_rel at the end of training, score a sweep of widths with the run's in-training
metric (`train.scoring`), and make one of them the run's EMA weights.

The end of training is the last snapshot's step (the loop saves one at the last step, and at a
stop for time). A width between the two kept ones is reconstructed to within a fraction of a
percent of their difference (tests/test_posthoc_ema.py); far outside them the least-squares
weights grow and the reconstruction gets noisier, as EDM2's Fig. 6 shows.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from torch import Tensor

from inkfuse.artifacts import checkpoint
from inkfuse.artifacts import ema as snapshots
from inkfuse.artifacts.lock import locked
from inkfuse.errors import CheckpointError
from inkfuse.train import scoring
from inkfuse.train.ema import combine, posthoc_coefficients, sigma_rel_to_gamma

# the widths `inkfuse ema --sweep` tries by default: EDM2's Fig. 5 sweeps about this range
DEFAULT_SIGMA_RELS = (0.01, 0.02, 0.03, 0.05, 0.07, 0.10, 0.13, 0.16, 0.20, 0.25)


def run_snapshots(run_dir: Path) -> list[snapshots.Snapshot]:
    """The run's snapshots, or a one-line refusal when there are too few to fit anything."""
    found = snapshots.read_snapshots(Path(run_dir))
    if len(found) < 2:
        raise CheckpointError(f"{run_dir} has {len(found)} post-hoc EMA snapshots, too few to "
                              "reconstruct from: train it with --set train.ema_snapshots_every=N "
                              "(N a tenth of train.steps, say)")
    return found


def coefficients(found: Sequence[snapshots.Snapshot], sigma_rels: Sequence[float]
                 ) -> tuple[int, np.ndarray]:
    """(the end step, [snapshots, widths] least-squares weights of each width at that step)."""
    end = max(s.step for s in found)
    basis = [(s.step, s.gamma) for s in found]
    columns = [posthoc_coefficients(basis, (end, sigma_rel_to_gamma(r))) for r in sigma_rels]
    return end, np.stack(columns, axis=1)


def reconstruct(run_dir: Path, sigma_rels: Sequence[float], expected: dict[str, Tensor]
                ) -> tuple[int, list[dict[str, Tensor]]]:
    """(the end step, the EMA of each width in `sigma_rels` there); `expected` (the model's
    state dict) checks every snapshot's names, shapes and dtypes. The snapshots are read one at
    a time, once for all widths."""
    found = run_snapshots(run_dir)
    end, x = coefficients(found, sigma_rels)

    def weights() -> Iterator[dict[str, Tensor]]:
        for s in found:
            yield snapshots.load_snapshot(Path(run_dir), s, expected)

    return end, combine(weights(), x)


def recipe_ema(run_dir: Path, expected: dict[str, Tensor]) -> dict[str, Tensor]:
    """The EMA the recipe trained: the checkpoint's, or the one put aside by `save`."""
    original = snapshots.folder(run_dir) / snapshots.ORIGINAL
    if original.is_file():
        return checkpoint.load_checked(original, expected, "the run's model")
    return checkpoint.load_checked(checkpoint.find(run_dir) / "ema.safetensors", expected,
                                   "the run's model")


def sweep(run: Any, sigma_rels: Sequence[float], metrics: list[str], n: int, seed: int
          ) -> tuple[int, list[dict[str, Any]]]:
    """Score the recipe's EMA and the reconstruction of each width of `sigma_rels` with
    `metrics` on `n` samples from `seed` (`scoring.score`). Returns (the end step, rows): the
    first row is the recipe's EMA (sigma_rel None), then one per width, each {"sigma_rel",
    "gamma", score name: value}. `run` (a loaded `Run`) keeps the weights it came with."""
    loaded = {k: v.clone() for k, v in run.net.state_dict().items()}
    try:
        run.net.load_state_dict(recipe_ema(run.dir, loaded))
        rows = [{"sigma_rel": None, "gamma": None, **scoring.score(run, metrics, n, seed)}]
        end, weights = reconstruct(run.dir, sigma_rels, loaded)
        for sigma_rel, w in zip(sigma_rels, weights, strict=True):
            run.net.load_state_dict(w)
            rows.append({"sigma_rel": sigma_rel, "gamma": sigma_rel_to_gamma(sigma_rel),
                         **scoring.score(run, metrics, n, seed)})
    finally:
        run.net.load_state_dict(loaded)
    return end, rows


def best(rows: Sequence[dict[str, Any]], key: str) -> dict[str, Any]:
    """The reconstruction (not the recipe's EMA) with the best `key` score."""
    chosen = None
    for row in rows:
        if row["sigma_rel"] is not None and (chosen is None
                                             or scoring.better(key, row[key], chosen[key])):
            chosen = row
    if chosen is None or chosen[key] is None:
        raise CheckpointError(f"no reconstruction got a {key} score (non-finite samples?); "
                              "choose one with --save SIGMA_REL")
    return chosen


def save(run_dir: Path, sigma_rel: float, expected: dict[str, Tensor]) -> tuple[int, Path]:
    """Make the reconstruction of `sigma_rel` the run's EMA (what `load_run` samples), under
    the run-dir lock; the recipe's EMA is kept in ema_snapshots/original-ema.safetensors and
    comes back with `restore`, or by itself when the run trains on (the reconstruction was of
    the old end). Returns (the end step, the file written)."""
    run_dir = Path(run_dir)
    with locked(run_dir):
        end, (weights,) = reconstruct(run_dir, [sigma_rel], expected)
        return end, snapshots.replace_ema(run_dir, weights, sigma_rel, end)


def restore(run_dir: Path) -> Path:
    """Put the recipe's EMA back after `save`; returns the file written."""
    with locked(run_dir):
        return snapshots.restore_ema(Path(run_dir))
