"""inkfuse: diffusion models from a plain U-Net to text-to-image.

    import inkfuse
    config = inkfuse.load_recipe("shapes", ["train.steps=500"])
    run_dir = inkfuse.train(config, "runs/shapes")
    run = inkfuse.load_run(run_dir)
    images = inkfuse.sample(run, 8, labels=[0, 1, 2, 3] * 2, guidance=3.0)   # [-1, 1] tensors

The names below are imported on first use, so `import inkfuse` (and `import inkfuse.config`,
which recipe tools use without PyTorch) stays cheap.
"""

from __future__ import annotations

import sys
import types

from inkfuse.lazy import lazy_names

__version__ = "0.1.0"

_NAMES = {
    "Config": "inkfuse.config", "load_recipe": "inkfuse.config",
    "CheckpointError": "inkfuse.errors", "ConfigError": "inkfuse.errors",
    "DataError": "inkfuse.errors", "InkfuseError": "inkfuse.errors",
    "TrainingError": "inkfuse.errors",
    "Run": "inkfuse.artifacts", "load_run": "inkfuse.artifacts",
    "sample": "inkfuse.pipelines", "sample_grid": "inkfuse.pipelines",
    "train": "inkfuse.train",
}
__all__ = sorted(_NAMES)
__getattr__ = lazy_names(__name__, _NAMES)



class _Face(types.ModuleType):
    """`inkfuse.train` is the function, as it always was, although `inkfuse.train` is also the
    training package: the import system binds a package's attribute to each subpackage it loads,
    which would turn `inkfuse.train(...)` into calling a module once anything imported the
    package. The subpackage stays what `import inkfuse.train` and `sys.modules` give."""

    def __setattr__(self, name: str, value: object) -> None:
        if name in _NAMES and isinstance(value, types.ModuleType):
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Face
