"""Checkpoints as safetensors + JSON (never pickle), written so a crash cannot damage them.

A checkpoint is the folder `RUN/checkpoint/`:
    model.safetensors   the trained weights          ema.safetensors   their moving average
    trainer.safetensors AdamW's moments              state.json        step, AdamW's scalars,
                                                                       the recipe
(a run without EMA keeps the weights themselves in ema.safetensors: what an EMA of decay 0 is).
It is first written in full to a folder of a unique name, `checkpoint.tmp-<random>/`, then
swapped in with two renames; a crash between them leaves `checkpoint.old/`, which `find` falls
back to. So at every instant the run dir holds one complete checkpoint, and a full disk costs
only the checkpoint being written. Every tensor read back is checked by name, shape and dtype
against the model it is for (`check_weights`, `check_optimizer`); every JSON file by its
structure (`schema`).
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import secrets
import shutil
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor

from inkfuse.artifacts.schema import check_json, schema_of
from inkfuse.errors import CheckpointError
from inkfuse.io import atomic_path, write_new

FORMAT = "inkfuse-1"
CKPT, TMP, OLD = "checkpoint", "checkpoint.tmp", "checkpoint.old"
# a checkpoint being written: checkpoint.tmp-<random>/ (unique, so two writers never share one
# and nothing planted at a guessable name is written through); the bare name is what older
# versions left behind
_TMP_PREFIX = f"{TMP}-"
_NO_SPACE = (errno.ENOSPC, errno.EDQUOT)


def write_error(path: Path, e: BaseException, again: str = "run the same command again"
                ) -> CheckpointError:
    """The one line for a failed write of `path`: a full disk (OSError ENOSPC, or safetensors'
    wrapped `IoError(... StorageFull ...)`) says so and how to go on; anything else names the
    cause. `again` is the fix after the cause is removed."""
    text = str(e).splitlines()[0] if str(e) else type(e).__name__
    full = (isinstance(e, OSError) and e.errno in _NO_SPACE) or any(
        mark in text for mark in ("StorageFull", "No space left", "code: 28", "QuotaExceeded"))
    if full:
        return CheckpointError(f"no space left on device writing {path}; free space and {again}")
    if isinstance(e, OSError) and e.strerror:
        text = e.strerror
    return CheckpointError(f"cannot write {path} ({text}); fix that and {again}")


@contextlib.contextmanager
def writing(path: Path, again: str = "run the same command again") -> Iterator[None]:
    """Map errors of writing `path` (the OS's, safetensors') to one CheckpointError line."""
    try:
        yield
    except (OSError, SafetensorError) as e:
        raise write_error(path, e, again) from None


def _save_tensors(path: Path, tensors: dict[str, Tensor], metadata: dict[str, str]) -> None:
    tensors = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={"format": FORMAT, **metadata})


def save_tensors(path: Path, tensors: dict[str, Tensor], **metadata: str) -> None:
    """Write a safetensors file of ours atomically (temp file beside it, then rename); a full
    disk or other failure is one CheckpointError and leaves `path` as it was."""
    with writing(path):
        _save_tensors(path, tensors, metadata)


def load_tensors(path: Path) -> dict[str, Tensor]:
    """Read a safetensors file of ours; any damage becomes one clear CheckpointError."""
    if not path.is_file():
        raise CheckpointError(f"{path} is missing: the run dir is incomplete (train it again?)")
    return read_tensors(path)[0]


def read_tensors(path: Path, fix: str = "delete the run dir or restore it from a copy"
                 ) -> tuple[dict[str, Tensor], dict[str, str]]:
    """The tensors of a safetensors file of ours and its metadata; any damage (or a file of
    someone else's) is one CheckpointError ending in `fix`."""
    try:
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
        if metadata.get("format") != FORMAT:
            raise CheckpointError(f"{path} was not written by inkfuse (no '{FORMAT}' tag); {fix}")
        return load_file(str(path)), metadata
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise CheckpointError(f"{path} is truncated or corrupt ({first}); {fix}") from None


def read_json(path: Path) -> Any:
    """A JSON file of a run dir, its structure checked against the schema of its kind
    (`schema.schema_of`: state.json, config.json, vae.json, clip.json), so that every reader
    of one gets the same one-line refusal of a damaged file, never a KeyError or TypeError
    later."""
    try:
        value = json.loads(path.read_text())
    except FileNotFoundError:
        raise CheckpointError(f"{path} is missing: is {path.parent} a run dir?") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{path} is damaged ({e}); restore it or start a new run") from None
    schema = schema_of(path.name)
    if schema is not None:
        check_json(value, schema, path)
    return value


def write_json(path: Path, value: Any) -> None:
    """Write JSON atomically: a temp file of a unique name beside it, created exclusively and
    never through a symlink (`io.write_new`), then renamed over `path`."""
    with writing(path):
        _write_json(path, value)


def _write_json(path: Path, value: Any) -> None:
    data = json.dumps(value, indent=2).encode()
    with atomic_path(path) as tmp:
        write_new(tmp, data)


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


def _remove(path: Path) -> None:
    """Delete a leftover (folder, file or symlink) without following a symlink."""
    if path.is_symlink() or path.is_file():
        path.unlink(missing_ok=True)
    elif path.is_dir():
        shutil.rmtree(path, ignore_errors=True)


def leftovers(run_dir: Path) -> list[Path]:
    """Temp checkpoints of writes that never finished (a crash, a full disk): never a
    checkpoint, so `find` ignores them and `save` deletes them."""
    if not run_dir.is_dir():
        return []
    return sorted(p for p in run_dir.iterdir() if p.name == TMP or p.name.startswith(_TMP_PREFIX))


def _make_tmp(run_dir: Path) -> Path:
    """A new folder of a unique name for the checkpoint being written. `os.mkdir` fails on
    anything already there (a symlink included), so nothing planted is ever written into; the
    folder gets the usual umask permissions (mkdtemp's 0700 would make the run dir unreadable
    to a shared group once the folder is renamed to checkpoint/)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    while True:
        tmp = run_dir / f"{_TMP_PREFIX}{secrets.token_hex(4)}"
        try:
            tmp.mkdir()
            return tmp
        except FileExistsError:
            continue


def save(run_dir: Path, model: dict[str, Tensor], ema: dict[str, Tensor],
         trainer: dict[str, Tensor], state: dict[str, Any],
         extra: Mapping[str, dict[str, Tensor]] | None = None) -> None:
    """Write a complete checkpoint into `run_dir/checkpoint/`, atomically as a whole.

    `extra` names further state to resume from (`<name>.safetensors` beside the others: the
    post-hoc EMA's averages), swapped in with the rest, so that it is always of the same step.
    The caller holds the run-dir lock (`artifacts.lock`), so temp checkpoints still there are
    leftovers of a crash and are deleted first. A failed write (a full disk most often) is one
    CheckpointError line; the temp folder is removed and the previous checkpoint is untouched,
    so rerunning the command resumes from it."""
    for stale in leftovers(run_dir):
        _remove(stale)
    final, old = run_dir / CKPT, run_dir / OLD
    again = "run the same command to resume from the last checkpoint"
    with writing(run_dir / CKPT, again):
        tmp = _make_tmp(run_dir)
        try:
            step = str(state["step"])
            with writing(tmp, again):
                files = {"model": model, "ema": ema, "trainer": trainer, **(extra or {})}
                for name, tensors in files.items():
                    _save_tensors(tmp / f"{name}.safetensors", tensors, {"step": step})
                _write_json(tmp / "state.json", state)
        except BaseException:
            _remove(tmp)
            raise
        if final.exists():
            _remove(old)
            os.replace(final, old)
        os.replace(tmp, final)
        _remove(old)


def find(run_dir: Path) -> Path | None:
    """The complete checkpoint folder in `run_dir`, if any (see the module docstring); temp
    folders of unfinished writes never count, and neither does a symlink planted there."""
    for name in (CKPT, OLD):
        folder = run_dir / name
        if not folder.is_symlink() and (folder / "state.json").is_file():
            return folder
    return None


def _dtype(t: Tensor) -> str:
    return str(t.dtype).removeprefix("torch.")


def check_weights(weights: dict[str, Tensor], expected: dict[str, Tensor], path: Path,
                  described_by: str, fix: str = "an older inkfuse wrote it? train it again",
                  cast_floats: bool = False) -> None:
    """Weights that do not fit the model `described_by` get one line naming the first tensor
    that differs and the fix, instead of PyTorch's dump of every key.

    Dtypes are compared as well as shapes: `load_state_dict` casts silently, so a header edited
    from F32 to I32 (the same size) would load as garbage and sample with exit status 0.
    `cast_floats` accepts any floating dtype for a floating tensor (foreign weights released
    in fp16), never an integer one."""
    missing, extra = sorted(set(expected) - set(weights)), sorted(set(weights) - set(expected))
    if missing or extra:
        name = (missing or extra)[0]
        raise CheckpointError(f"{path} {'lacks' if missing else 'has an unexpected'} tensor "
                              f"{name}: it belongs to a different model than {described_by}; "
                              f"{fix}")
    for name, value in expected.items():
        got = weights[name]
        if got.shape != value.shape:
            raise CheckpointError(
                f"{path}: {name} is {list(got.shape)} but {described_by} has "
                f"{list(value.shape)}: it belongs to a different model; {fix}")
        same = got.dtype == value.dtype or (
            cast_floats and got.is_floating_point() and value.is_floating_point())
        if not same:
            raise CheckpointError(
                f"{path}: {name} is {_dtype(got)} but {described_by} has {_dtype(value)}: the "
                f"file was altered or belongs to another model; {fix}")


def load_checked(path: Path, expected: dict[str, Tensor], described_by: str,
                 fix: str = "train into a new --out dir") -> dict[str, Tensor]:
    """`load_tensors` of `path`, checked (names, shapes, dtypes) against `expected`."""
    weights = load_tensors(path)
    check_weights(weights, expected, path, described_by, fix)
    return weights


_MOMENTS = ("exp_avg", "exp_avg_sq", "max_exp_avg_sq")


def check_optimizer(tensors: dict[str, Tensor], params: Iterable[Tensor], path: Path,
                    fix: str = "train into a new --out dir") -> None:
    """AdamW's saved state against the parameters it will update: each moment has its
    parameter's shape and dtype, each step count is a floating scalar, every index names a
    parameter. (`Optimizer.load_state_dict` casts moments to the parameter's dtype without a
    word, so a changed header would resume from garbage.)"""
    params = list(params)
    for name, value in tensors.items():
        parts = name.split(".", 2)
        if len(parts) != 3 or parts[0] != "optim" or not parts[1].isdigit():
            raise CheckpointError(f"{path} has an unexpected tensor {name}: it is not AdamW's "
                                  f"state; {fix}")
        idx, key = int(parts[1]), parts[2]
        if idx >= len(params):
            raise CheckpointError(f"{path}: {name} is the state of parameter {idx}, but the "
                                  f"model has {len(params)}: it belongs to another model; {fix}")
        param = params[idx]
        if key in _MOMENTS:
            want_shape, want_dtype = list(param.shape), param.dtype
        elif key == "step":
            want_shape, want_dtype = [], torch.float32
        else:
            continue  # another optimizer's extra state: load_state_dict judges it
        if list(value.shape) != want_shape:
            raise CheckpointError(f"{path}: {name} is {list(value.shape)} but its parameter "
                                  f"has {want_shape}: it belongs to another model; {fix}")
        if value.dtype != want_dtype:
            raise CheckpointError(f"{path}: {name} is {_dtype(value)} but should be "
                                  f"{str(want_dtype).removeprefix('torch.')}: the file was "
                                  f"altered; {fix}")


def load_optimizer(ckpt: Path, state: dict[str, Any], opt: torch.optim.Optimizer,
                   fix: str = "train into a new --out dir") -> dict[str, Any]:
    """The state dict for `opt.load_state_dict` from checkpoint folder `ckpt` (its
    trainer.safetensors and state.json's "optimizer"), checked against the parameters `opt`
    updates, in its own order (see `check_optimizer`)."""
    path = ckpt / "trainer.safetensors"
    tensors = load_tensors(path)
    check_optimizer(tensors, [p for group in opt.param_groups for p in group["params"]], path,
                    fix)
    return optimizer_state(tensors, state["optimizer"])


def load_weights(run_dir: Path, which: str = "ema") -> dict[str, Tensor]:
    """The (EMA) weights of the latest checkpoint; its state.json is read too, so a damaged
    checkpoint is refused here and not only when training resumes."""
    ckpt = find(run_dir)
    if ckpt is None:
        raise CheckpointError(f"{run_dir} holds no checkpoint: train first with `inkfuse train`")
    read_json(ckpt / "state.json")
    return load_tensors(ckpt / f"{which}.safetensors")
