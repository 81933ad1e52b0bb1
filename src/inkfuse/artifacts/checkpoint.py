"""Checkpoints as safetensors + JSON (never pickle), written so a crash cannot damage them.

A checkpoint is the folder `RUN/checkpoint/`:
    model.safetensors   the trained weights          ema.safetensors   their moving average
    trainer.safetensors AdamW's moments              state.json        step, AdamW's scalars,
                                                                       the recipe
(a run without EMA keeps the weights themselves in ema.safetensors: what an EMA of decay 0 is).
It is first written in full to `checkpoint.tmp/`, then swapped in with two renames; a crash
between them leaves `checkpoint.old/`, which `load` falls back to. So at every instant the run
dir holds one complete checkpoint.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor

from inkfuse.errors import CheckpointError

FORMAT = "inkfuse-1"
CKPT, TMP, OLD = "checkpoint", "checkpoint.tmp", "checkpoint.old"


def save_tensors(path: Path, tensors: dict[str, Tensor], **metadata: str) -> None:
    tensors = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    save_file(tensors, str(path), metadata={"format": FORMAT, **metadata})


def load_tensors(path: Path) -> dict[str, Tensor]:
    """Read a safetensors file of ours; any damage becomes one clear CheckpointError."""
    if not path.is_file():
        raise CheckpointError(f"{path} is missing: the run dir is incomplete (train it again?)")
    try:
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            if (f.metadata() or {}).get("format") != FORMAT:
                raise CheckpointError(f"{path} was not written by inkfuse (no '{FORMAT}' tag)")
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise CheckpointError(f"{path} is truncated or corrupt ({first}); "
                              "delete the run dir or restore it from a copy") from None


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise CheckpointError(f"{path} is missing: is {path.parent} a run dir?") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{path} is damaged ({e}); restore it or start a new run") from None


def write_json(path: Path, value: Any) -> None:
    """Write JSON atomically (temp file in the same folder, then rename)."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(value, indent=2))
    os.replace(tmp, path)


def optimizer_tensors(state: dict[str, Any]) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """Split `optimizer.state_dict()` into flat tensors and JSON-able rest."""
    tensors, scalars = {}, {}
    for idx, per_param in state["state"].items():
        for key, value in per_param.items():
            if isinstance(value, Tensor):
                tensors[f"optim.{idx}.{key}"] = value
            else:
                scalars[f"{idx}.{key}"] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def optimizer_state(tensors: dict[str, Tensor], rest: dict[str, Any]) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    for name, value in tensors.items():
        if name.startswith("optim."):
            _, idx, key = name.split(".", 2)
            state.setdefault(int(idx), {})[key] = value
    for name, value in rest["scalars"].items():
        idx, key = name.split(".", 1)
        state.setdefault(int(idx), {})[key] = value
    return {"state": state, "param_groups": rest["param_groups"]}


def save(run_dir: Path, model: dict[str, Tensor], ema: dict[str, Tensor],
         trainer: dict[str, Tensor], state: dict[str, Any]) -> None:
    """Write a complete checkpoint into `run_dir/checkpoint/`, atomically as a whole."""
    tmp, final, old = run_dir / TMP, run_dir / CKPT, run_dir / OLD
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    step = str(state["step"])
    save_tensors(tmp / "model.safetensors", model, step=step)
    save_tensors(tmp / "ema.safetensors", ema, step=step)
    save_tensors(tmp / "trainer.safetensors", trainer, step=step)
    write_json(tmp / "state.json", state)
    if final.exists():
        shutil.rmtree(old, ignore_errors=True)
        os.replace(final, old)
    os.replace(tmp, final)
    shutil.rmtree(old, ignore_errors=True)


def find(run_dir: Path) -> Path | None:
    """The complete checkpoint folder in `run_dir`, if any (see the module docstring)."""
    for name in (CKPT, OLD):
        if (run_dir / name / "state.json").is_file():
            return run_dir / name
    return None


def check_weights(weights: dict[str, Tensor], expected: dict[str, Tensor], path: Path,
                  described_by: str, fix: str = "an older inkfuse wrote it? train it again"
                  ) -> None:
    """Weights that do not fit the model `described_by` get one line naming the first tensor
    that differs and the fix, instead of PyTorch's dump of every key."""
    missing, extra = sorted(set(expected) - set(weights)), sorted(set(weights) - set(expected))
    if missing or extra:
        name = (missing or extra)[0]
        raise CheckpointError(f"{path} {'lacks' if missing else 'has an unexpected'} tensor "
                              f"{name}: it belongs to a different model than {described_by}; "
                              f"{fix}")
    for name, value in expected.items():
        if weights[name].shape != value.shape:
            raise CheckpointError(
                f"{path}: {name} is {list(weights[name].shape)} but {described_by} has "
                f"{list(value.shape)}: it belongs to a different model; {fix}")


def load_weights(run_dir: Path, which: str = "ema") -> dict[str, Tensor]:
    ckpt = find(run_dir)
    if ckpt is None:
        raise CheckpointError(f"{run_dir} holds no checkpoint: train first with `inkfuse train`")
    return load_tensors(ckpt / f"{which}.safetensors")
