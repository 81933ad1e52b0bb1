"""The post-hoc EMA snapshots of a run dir (`train.ema_snapshots_every`; EDM2, Karras et al.
2024): what `inkfuse ema` reconstructs other EMA lengths from.

    RUN/ema_snapshots/snapshots.json               the index: format, one entry per snapshot
    RUN/ema_snapshots/0000500-0.05.safetensors     the power-function EMA of σ_rel 0.05 after
                                                   500 updates, one file per (step, σ_rel)
    RUN/ema_snapshots/original-ema.safetensors     the checkpoint's own EMA, kept while a
                                                   reconstruction replaces it (`replace_ema`)

A snapshot file is written before its index entry, both atomically, so the index never names a
file that is not complete; file names come from the entries (never read from the index), so a
damaged index cannot point outside the folder. A resumed run drops the entries after its
checkpoint (`prune`), as the log does, and writes them again, bit-identical.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from torch import Tensor

from inkfuse.artifacts import checkpoint
from inkfuse.artifacts.schema import SNAPSHOT, check_json
from inkfuse.errors import CheckpointError
from inkfuse.io import atomic_path

SNAPSHOTS = "ema_snapshots"
INDEX = "snapshots.json"
ORIGINAL = "original-ema.safetensors"
FORMAT = "inkfuse-ema-snapshots-1"


@dataclass(frozen=True)
class Snapshot:
    """One saved power-function EMA: after `step` updates, of width `sigma_rel` (exponent
    `gamma`)."""

    step: int
    sigma_rel: float
    gamma: float

    @property
    def name(self) -> str:
        return f"{self.step:07d}-{self.sigma_rel:g}.safetensors"


def folder(run_dir: Path) -> Path:
    return Path(run_dir) / SNAPSHOTS


def _read_index(run_dir: Path) -> dict:
    path = folder(run_dir) / INDEX
    if not path.is_file():
        return {"format": FORMAT, "snapshots": []}
    index = checkpoint.read_json(path)  # its structure checked (schema.py)
    for i, entry in enumerate(index["snapshots"]):
        check_json(entry, SNAPSHOT, path, f"snapshots[{i}]")
    return index


def _write_index(run_dir: Path, index: dict) -> None:
    index["snapshots"].sort(key=lambda e: (e["step"], e["sigma_rel"]))
    checkpoint.write_json(folder(run_dir) / INDEX, index)


def read_snapshots(run_dir: Path) -> list[Snapshot]:
    """The run's snapshots in order of step, then σ_rel; each file checked to be there."""
    snapshots = [Snapshot(e["step"], e["sigma_rel"], e["gamma"])
                 for e in _read_index(run_dir)["snapshots"]]
    for s in snapshots:
        if not (folder(run_dir) / s.name).is_file():
            raise CheckpointError(f"{folder(run_dir) / s.name} is missing though {INDEX} lists "
                                  "it; restore it, or delete its entry from the index")
    return snapshots


def save_snapshot(run_dir: Path, snapshot: Snapshot, tensors: dict[str, Tensor]) -> None:
    """Write one snapshot's weights, then its index entry (replacing one of the same step and
    σ_rel: a resumed run writes the same again)."""
    checkpoint.save_tensors(folder(run_dir) / snapshot.name, tensors, step=str(snapshot.step))
    index = _read_index(run_dir)
    index["snapshots"] = [e for e in index["snapshots"]
                          if (e["step"], e["sigma_rel"]) != (snapshot.step, snapshot.sigma_rel)]
    index["snapshots"].append({"step": snapshot.step, "sigma_rel": snapshot.sigma_rel,
                               "gamma": snapshot.gamma})
    _write_index(run_dir, index)


def load_snapshot(run_dir: Path, snapshot: Snapshot, expected: dict[str, Tensor]
                  ) -> dict[str, Tensor]:
    """A snapshot's weights, checked (names, shapes, dtypes) against the run's model."""
    return checkpoint.load_checked(folder(run_dir) / snapshot.name, expected,
                                   "the run's model", fix="restore it or delete its entry from "
                                   f"{INDEX}")


def prune(run_dir: Path, step: int) -> None:
    """Drop the snapshots after `step` (a run resuming from the checkpoint of that step)."""
    if not (folder(run_dir) / INDEX).is_file():
        return
    index = _read_index(run_dir)
    later = [e for e in index["snapshots"] if e["step"] > step]
    if not later:
        return
    index["snapshots"] = [e for e in index["snapshots"] if e["step"] <= step]
    _write_index(run_dir, index)
    for e in later:
        (folder(run_dir) / Snapshot(e["step"], e["sigma_rel"], e["gamma"]).name).unlink(
            missing_ok=True)


def saved_reconstruction(run_dir: Path) -> dict | None:
    """{"sigma_rel", "step"} of the reconstruction that replaced the checkpoint's EMA, if any."""
    if not (folder(run_dir) / INDEX).is_file():
        return None
    return _read_index(run_dir).get("saved")


def replace_ema(run_dir: Path, weights: dict[str, Tensor], sigma_rel: float, step: int) -> Path:
    """Make `weights` the EMA of the run's checkpoint (what sampling loads), atomically. The
    checkpoint's own EMA is first copied to ema_snapshots/original-ema.safetensors, once: a
    second replacement keeps the first original, and `restore_ema` puts it back. Returns the
    path written."""
    ckpt = checkpoint.find(run_dir)
    if ckpt is None:
        raise CheckpointError(f"{run_dir} holds no checkpoint: train first with `inkfuse train`")
    original = folder(run_dir) / ORIGINAL
    if not original.is_file():
        with checkpoint.writing(original), atomic_path(original) as tmp:
            shutil.copyfile(ckpt / "ema.safetensors", tmp)
    target = ckpt / "ema.safetensors"
    checkpoint.save_tensors(target, weights, step=str(step), sigma_rel=f"{sigma_rel:g}")
    index = _read_index(run_dir)
    index["saved"] = {"sigma_rel": sigma_rel, "step": step}
    _write_index(run_dir, index)
    return target


def restore_ema(run_dir: Path) -> Path:
    """Put the checkpoint's original EMA back (undo `replace_ema`); returns the path written."""
    original = folder(run_dir) / ORIGINAL
    ckpt = checkpoint.find(run_dir)
    if ckpt is None or not original.is_file():
        raise CheckpointError(f"{run_dir} has no original EMA put aside: its checkpoint's EMA "
                              "was never replaced by `inkfuse ema --save`")
    target = ckpt / "ema.safetensors"
    with checkpoint.writing(target), atomic_path(target) as tmp:
        shutil.copyfile(original, tmp)
    index = _read_index(run_dir)
    index.pop("saved", None)
    _write_index(run_dir, index)
    original.unlink()
    return target
