"""Recipes of every kind, read one way: a TOML file's tables say what it trains (`[vae]`: a VAE,
`[clip]`: a CLIP, `[textlm]`: a masked-language-model text encoder, `[gan]`: a GAN, else
diffusion), `--set section.key=value` overrides apply on top, and the kind's dataclass validates
the lot.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from inkfuse.config.clip import ClipConfig
from inkfuse.config.core import RECIPES_DIR, Recipe, apply_overrides, read_recipe
from inkfuse.config.gan import GANConfig
from inkfuse.config.sections import Config
from inkfuse.config.textlm import TextLMConfig
from inkfuse.config.vae import VAEConfig
from inkfuse.errors import ConfigError

KINDS: dict[str, type[Recipe]] = {"diffusion": Config, "vae": VAEConfig, "clip": ClipConfig,
                                  "textlm": TextLMConfig, "gan": GANConfig}
_LABELS = {"diffusion": "diffusion", "vae": "VAE", "clip": "CLIP", "textlm": "text-LM",
           "gan": "GAN"}
_COMMANDS = {"diffusion": "inkfuse train", "vae": "inkfuse vae train",
             "clip": "inkfuse clip train", "textlm": "inkfuse textlm train",
             "gan": "inkfuse gan train"}


def recipe_kind(raw: dict[str, Any]) -> str:
    """What a recipe's tables train: its model table names the kind."""
    return next((kind for kind in ("vae", "clip", "textlm", "gan") if kind in raw), "diffusion")


def load_recipe(name_or_path: str | Path, overrides: Iterable[str] = (),
                kind: str | None = None) -> Any:
    """Read a TOML recipe (a path or a built-in name), apply `--set` overrides, validate.

    Returns a `Config`, `VAEConfig`, `ClipConfig`, `TextLMConfig` or `GANConfig` as the file's
    tables say; `kind` ("diffusion", "vae", "clip", "textlm", "gan") insists on one, so that a
    command given another kind's recipe says which command trains it."""
    if kind is not None and kind not in KINDS:
        raise ConfigError(f"unknown recipe kind {kind!r} (known: {', '.join(KINDS)})")
    raw, path = read_recipe(name_or_path)
    found = recipe_kind(raw)  # the file's own tables, before any --set adds one
    if kind is not None and kind != found:
        builtin = path.parent == RECIPES_DIR
        shown, name = (f"recipes/{path.name}", path.stem) if builtin else (str(path), str(path))
        raise ConfigError(f"{shown} is a {_LABELS[found]} recipe: train it with "
                          f"`{_COMMANDS[found]} {name}`")
    return KINDS[found].from_dict(apply_overrides(raw, overrides, str(path)), source=str(path))
