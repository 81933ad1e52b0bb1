"""Lazy package faces: a package's public names are imported on first use (PEP 562), so that
importing one small part (`inkfuse.config`, `inkfuse.errors`) never drags PyTorch and every
model in with it."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any


def lazy_names(package: str, names: dict[str, str]) -> Callable[[str], Any]:
    """The module `__getattr__` of `package`: `names` maps each public name to the module that
    defines it; the value is cached in the package's namespace after the first look-up."""

    def __getattr__(name: str) -> Any:
        if name not in names:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        module = importlib.import_module(package)
        value = getattr(importlib.import_module(names[name]), name)
        setattr(module, name, value)
        return value

    return __getattr__
