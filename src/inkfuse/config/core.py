"""The machinery of every recipe: typed fields with their allowed values, one generic validation
pass, recipes as dataclasses of sections, TOML files and `--set a.b=value` overrides.

Every key is a dataclass field whose metadata carries the allowed choices or range, so validation
is one generic pass and every error is one line that names the key, the bad value and what would
be accepted. Nothing in `inkfuse.config` imports torch: a recipe can be read and checked on a
machine that only edits recipes.
"""

from __future__ import annotations

import dataclasses
import json
import math
import tomllib
import types
import typing
from dataclasses import asdict, field, fields
from pathlib import Path
from typing import Any

from inkfuse.errors import ConfigError

RECIPES_DIR = Path(__file__).resolve().parent.parent / "recipes"


def choice(default: Any, *options: Any, doc: str = "") -> Any:
    """A field whose value must be one of `options`."""
    return field(default=default, metadata={"choices": options, "doc": doc})


def bounded(default: Any, lo: float | None = None, hi: float | None = None, doc: str = "") -> Any:
    """A numeric field that must lie in [lo, hi] (either end open when None)."""
    return field(default=default, metadata={"range": (lo, hi), "doc": doc})


def listed(default: list, doc: str = "", lo: float | None = None) -> Any:
    """A list field; `lo` is the least value each entry may take (a width multiplier of 0 or a
    negative feature-map size would only fail later, inside a network constructor)."""
    meta: dict[str, Any] = {"doc": doc}
    if lo is not None:
        meta["item_range"] = (lo, None)  # (least, greatest); no list needs a greatest yet
    return field(default_factory=lambda: list(default), metadata=meta)


def _span(lo: float | None, hi: float | None) -> str:
    return f"[{'-inf' if lo is None else lo}, {'inf' if hi is None else hi}]"


def _coerce(key: str, value: Any, annotation: Any) -> Any:
    """Check `value` against a field's type, allowing int -> float; returns the value."""
    hint = eval(annotation, vars(typing)) if isinstance(annotation, str) else annotation
    origin = typing.get_origin(hint)
    if origin is list:
        (inner,) = typing.get_args(hint)
        if not isinstance(value, list):
            raise ConfigError(f"{key} must be a list of {inner.__name__}, got {value!r}")
        return [_coerce(f"{key}[{i}]", v, inner) for i, v in enumerate(value)]
    if origin in (typing.Union, types.UnionType):
        return value
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint is bool and not isinstance(value, bool):
        raise ConfigError(f"{key} must be true or false, got {value!r}")
    if hint is int and (isinstance(value, bool) or not isinstance(value, int)):
        raise ConfigError(f"{key} must be an integer, got {value!r}")
    if not isinstance(value, hint):
        raise ConfigError(f"{key} must be a {hint.__name__}, got {value!r}")
    return value


def _check(key: str, value: Any, meta: typing.Mapping[str, Any]) -> None:
    """One field's value against its metadata. NaN and infinity are refused for every float
    first, whatever its range says: NaN compares false with both ends of a range, so it would
    slip through a range check and train to NaN weights (an EMA decay) or fail deep inside
    the optimizer (a learning rate), and an open-ended range would let infinity in."""
    for i, item in enumerate(value if isinstance(value, list) else [value]):
        if isinstance(item, float) and not math.isfinite(item):
            where = f"{key}[{i}]" if isinstance(value, list) else key
            span = _span(*meta.get("range", (None, None)))
            raise ConfigError(f"{where} = {item!r} is not a finite number; give a number in "
                              f"{span}")
    if "choices" in meta and value not in meta["choices"]:
        options = ", ".join(map(str, meta["choices"]))
        raise ConfigError(f"{key} = {value!r} is not one of: {options}")
    if "range" in meta:
        lo, hi = meta["range"]
        if (lo is not None and value < lo) or (hi is not None and value > hi):
            raise ConfigError(f"{key} = {value!r} is out of range {_span(lo, hi)}")
    if "item_range" in meta:
        lo, _ = meta["item_range"]
        for i, item in enumerate(value):
            if item < lo:
                raise ConfigError(f"{key} = {value!r}: entry {i} is {item!r}, but every entry "
                                  f"must be at least {lo}")


def build_section(cls: type, table: dict[str, Any], name: str, source: str,
                  base: Any = None) -> Any:
    """One validated section dataclass from its table: unknown keys, types, choices, ranges.
    Keys the table leaves out keep the values of `base` (default: the class's defaults)."""
    if not isinstance(table, dict):
        raise ConfigError(f"[{name}] in {source} must be a table")
    known = {f.name: f for f in fields(cls)}
    unknown = sorted(set(table) - set(known))
    if unknown:
        raise ConfigError(f"unknown key {name}.{unknown[0]} in {source} "
                          f"(known keys of [{name}]: {', '.join(known)})")
    values = {}
    for key, value in table.items():
        values[key] = _coerce(f"{name}.{key}", value, known[key].type)
        _check(f"{name}.{key}", values[key], known[key].metadata)
    return cls(**values) if base is None else dataclasses.replace(base, **values)


class Recipe:
    """A whole recipe: a dataclass whose fields are its sections, one TOML table each.

    A section's default instance is the kind's default: the VAE and CLIP recipes share the
    diffusion recipe's `TrainConfig` class with other defaults (no EMA, their own batch size),
    and a table fills in only what it names on top of them."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    def check(self) -> None:
        """The rules across fields that no single field's range can express."""

    @classmethod
    def from_dict(cls, raw: dict[str, Any], source: str = "recipe") -> Any:
        """Build and validate a recipe from nested dicts (TOML tables or a saved JSON)."""
        defaults = cls()
        names = [f.name for f in fields(cls)]
        extra = sorted(set(raw) - set(names))
        if extra:
            raise ConfigError(f"unknown section [{extra[0]}] in {source} "
                              f"(known: {', '.join(names)})")
        config = cls(**{name: build_section(type(getattr(defaults, name)), raw.get(name, {}),
                                            name, source, base=getattr(defaults, name))
                        for name in names})
        config.check()
        return config


def replace(config: Recipe, **sections: dict[str, Any]) -> Any:
    """A copy of a recipe of any kind with some fields changed, validated again:
    replace(c, train={"steps": 3})."""
    raw = config.to_dict()
    for name, values in sections.items():
        raw[name].update(values)
    return type(config).from_dict(raw, source="replace()")


def parse_override(text: str) -> tuple[list[str], Any]:
    """Parse `a.b=value`; the value is read as TOML (numbers, booleans, lists) or else a string."""
    if "=" not in text:
        raise ConfigError(f"--set {text!r} must look like section.key=value, e.g. train.steps=200")
    key, value = text.split("=", 1)
    parts = key.strip().split(".")
    if len(parts) != 2 or not all(parts):
        raise ConfigError(f"--set key {key!r} must be section.key, e.g. train.steps")
    try:
        parsed = tomllib.loads(f"v = {value}")["v"]
    except tomllib.TOMLDecodeError:
        parsed = value
    return parts, parsed


def resolve_recipe(name_or_path: str | Path) -> Path:
    """A recipe path, or the name of a built-in recipe (`shapes` -> recipes/shapes.toml)."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    builtin = RECIPES_DIR / f"{path.stem if path.suffix == '.toml' else path.name}.toml"
    if builtin.is_file() and path.parent == Path("."):
        return builtin
    names = ", ".join(sorted(p.stem for p in RECIPES_DIR.glob("*.toml")))
    raise ConfigError(f"recipe {str(name_or_path)!r} not found "
                      f"(give a .toml path or one of: {names})")


def read_recipe(name_or_path: str | Path) -> tuple[dict[str, Any], Path]:
    """The raw tables of a TOML recipe, and its path."""
    path = resolve_recipe(name_or_path)
    try:
        raw = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"recipe {path} is not valid TOML: {e}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"cannot read recipe {path}: {e}") from None
    return raw, path


def apply_overrides(raw: dict[str, Any], overrides: typing.Iterable[str], source: str
                    ) -> dict[str, Any]:
    """`raw` with each `--set section.key=value` written into it."""
    for text in overrides:
        (section, key), value = parse_override(text)
        raw.setdefault(section, {})
        if not isinstance(raw[section], dict):
            raise ConfigError(f"[{section}] in {source} must be a table")
        raw[section][key] = value
    return raw

