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


def req(*types: type, **fields: Field) -> Field:
    return Field(types, True, fields)


def opt(*types: type, items: type | None = None, **fields: Field) -> Field:
    return Field(types, False, fields, items)


_NAMES = {dict: "a table", list: "a list", str: "a string", int: "an integer",
          float: "a number", bool: "true/false"}
_RECIPE_SECTIONS = ("data", "model", "diffusion", "train", "sample", "text", "vae", "clip")

SCHEMAS: dict[str, dict[str, Field]] = {
    "state.json": {
        "step": req(int),
        # what resume needs; a checkpoint written by hand for sampling may leave it out
        "optimizer": opt(dict, param_groups=req(list), scalars=req(dict)),
        "config": opt(dict),
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


def _refuse(path: Path, where: str, problem: str) -> CheckpointError:
    return CheckpointError(f"{path} is damaged: {where} {problem}; restore it from a copy or "
                           "train again")


def check_json(value: Any, schema: dict[str, Field], path: Path, where: str = "") -> None:
    """Raise one CheckpointError line naming the first key of `value` that does not fit."""
    if not isinstance(value, dict):
        raise _refuse(path, where or "the file", f"is {_kind(value)}, not a table")
    for key, spec in schema.items():
        name = f"{where}.{key}" if where else key
        if key not in value:
            if spec.required:
                raise _refuse(path, "it", f"lacks {name!r}")
            continue
        item = value[key]
        if not _is(item, spec.types):
            wanted = " or ".join(_NAMES.get(t, t.__name__) for t in spec.types)
            raise _refuse(path, name, f"is {_kind(item)} ({_short(item)}), not {wanted}")
        if spec.fields:
            check_json(item, spec.fields, path, name)
        if spec.items is not None:
            for i, element in enumerate(item):
                if not _is(element, (spec.items,)):
                    raise _refuse(path, f"{name}[{i}]", f"is {_kind(element)}, not "
                                  f"{_NAMES.get(spec.items, spec.items.__name__)}")


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 30 else text[:27] + "..."
