"""The structure of each JSON file of a run dir, checked in one place when it is read.

A hand-edited or damaged file (`"step": "abc"`, a list where a table belongs) would otherwise
fail later with a KeyError or TypeError deep in the loader, or worse be used. Only structure
is checked here: required keys and the JSON type of each value. What the values mean (ranges,
choices of a recipe) is `inkfuse.config`'s business. Keys not listed are allowed, so files of
earlier versions, which had other optional keys, still load.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from inkfuse.errors import CheckpointError


@dataclass(frozen=True)
class Field:
    """One key: its JSON type(s), whether it must be there, and the schema of a table."""

    types: tuple[type, ...]
    required: bool = True
    fields: dict[str, Field] = field(default_factory=dict)  # a table's keys (types == (dict,))
    items: type | None = None  # the type of each element of a list
    values: tuple[type, ...] = ()  # the types of every value of a table (NoneType: null)


def req(*types: type, items: type | None = None, **fields: Field) -> Field:
    return Field(types, True, fields, items)


def opt(*types: type, items: type | None = None, values: tuple[type, ...] = (),
        **fields: Field) -> Field:
    return Field(types, False, fields, items, values)


_NAMES = {dict: "a table", list: "a list", str: "a string", int: "an integer",
          float: "a number", bool: "true/false", type(None): "null"}
_RECIPE_SECTIONS = ("data", "model", "diffusion", "train", "sample", "text", "prior", "vae",
                    "clip", "finetune")

SCHEMAS: dict[str, dict[str, Field]] = {
    "state.json": {
        "step": req(int),
        # what resume needs; a checkpoint written by hand for sampling may leave it out
        "optimizer": opt(dict, param_groups=req(list), scalars=req(dict)),
        "config": opt(dict),
        "train_seconds": opt(float),  # the run's training time up to this step
    },
    "config.json": {
        **{name: opt(dict) for name in _RECIPE_SECTIONS},
        "dataset": opt(dict, name=opt(str), size=opt(int), channels=opt(int),
                       class_names=opt(list, items=str), context_names=opt(list, items=str),
                       prompts=opt(list, items=str)),
    },
    "vae.json": {
        "format": req(str), "model": req(dict), "image_size": req(int),
        "config": opt(dict), "metrics": opt(dict),
    },
    "clip.json": {
        "format": req(str), "model": req(dict), "tokenizer": req(dict),
        "config": opt(dict), "train": opt(dict), "metrics": opt(dict),
    },
    "textlm.json": {
        "format": req(str), "model": req(dict), "tokenizer": req(dict),
        "config": opt(dict), "metrics": opt(dict),
    },
    "prior.json": {  # RUN/prior of an unCLIP run (`artifacts.prior`)
        "format": req(str), "model": req(dict), "prior": req(dict),
        "config": opt(dict), "metrics": opt(dict),
    },
    "gan.json": {
        "format": req(str), "model": req(dict), "class_names": opt(list, items=str),
        "config": opt(dict), "metrics": opt(dict),
    },
}


# One record of log.jsonl (`artifacts.log`): a training step's loss and its parts (a kind's
# own keys, not listed), or an in-training score (`eval`: metric name -> value, null where the
# samples were not finite). `seconds` counts this process's training time, `train_seconds` the
# run's across resumes; neither counts the time spent scoring.
LOG_RECORD: dict[str, Field] = {
    "step": req(int), "loss": opt(float), "lr": opt(float), "images_per_s": opt(float),
    "seconds": opt(float), "train_seconds": opt(float),
    "eval": opt(dict, values=(float, type(None))), "eval_n": opt(int),
    "eval_seconds": opt(float), "eval_error": opt(str),
}

# One entry of RUN/ema_snapshots/snapshots.json (`artifacts.ema`): a power-function EMA of
# width sigma_rel (exponent gamma) saved after `step` updates.
SNAPSHOT: dict[str, Field] = {"step": req(int), "sigma_rel": req(float), "gamma": req(float)}
SCHEMAS["snapshots.json"] = {
    "format": req(str), "snapshots": req(list, items=dict),
    # set by `inkfuse ema --save`: the checkpoint's EMA is this reconstruction
    "saved": opt(dict, sigma_rel=req(float), step=req(int)),
}


def schema_of(name: str) -> dict[str, Field] | None:
    """The schema of a run-dir file called `name`, or None for a JSON file of no known kind."""
    return SCHEMAS.get(name)


def _kind(value: Any) -> str:
    for t in (bool, dict, list, str, int, float):
        if isinstance(value, t):
            return _NAMES[t]
    return "null" if value is None else type(value).__name__


def _is(value: Any, types: tuple[type, ...]) -> bool:
    if isinstance(value, bool):  # JSON true is no number
        return bool in types
    if isinstance(value, int) and float in types:
        return True
    return isinstance(value, types)


FIX = "restore it from a copy or train again"


def _refuse(path: Path, where: str, problem: str, fix: str = FIX) -> CheckpointError:
    return CheckpointError(f"{path} is damaged: {where} {problem}; {fix}")


def _wanted(types: tuple[type, ...]) -> str:
    return " or ".join(_NAMES.get(t, t.__name__) for t in types)


def check_json(value: Any, schema: dict[str, Field], path: Path, where: str = "",
               fix: str = FIX) -> None:
    """Raise one CheckpointError line naming the first key of `value` that does not fit, and
    `fix`."""
    if not isinstance(value, dict):
        raise _refuse(path, where or "the file", f"is {_kind(value)}, not a table", fix)
    for key, spec in schema.items():
        name = f"{where}.{key}" if where else key
        if key not in value:
            if spec.required:
                raise _refuse(path, "it", f"lacks {name!r}", fix)
            continue
        item = value[key]
        if not _is(item, spec.types):
            raise _refuse(path, name, f"is {_kind(item)} ({_short(item)}), not "
                          f"{_wanted(spec.types)}", fix)
        if spec.fields:
            check_json(item, spec.fields, path, name, fix)
        if spec.items is not None:
            for i, element in enumerate(item):
                if not _is(element, (spec.items,)):
                    raise _refuse(path, f"{name}[{i}]", f"is {_kind(element)}, not "
                                  f"{_NAMES.get(spec.items, spec.items.__name__)}", fix)
        for sub, element in (item.items() if spec.values else ()):
            if not _is(element, spec.values):
                raise _refuse(path, f"{name}.{sub}", f"is {_kind(element)} "
                              f"({_short(element)}), not {_wanted(spec.values)}", fix)


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 30 else text[:27] + "..."
