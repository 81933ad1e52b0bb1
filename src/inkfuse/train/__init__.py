"""Training: one loop (`loop`: LR, seeds, accumulation, EMA, NaN stop, logging, checkpoints and
exact resume, time budget, DDP under torchrun) and one small module per model kind
(`diffusion`, `vae`, `clip`); `train(recipe, out)` picks the kind from the recipe."""

from inkfuse.lazy import lazy_names

_NAMES = {"train": "inkfuse.train.trainer"}
__all__ = sorted(_NAMES)
__getattr__ = lazy_names(__name__, _NAMES)
