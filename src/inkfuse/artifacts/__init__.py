"""Every read and write of a run dir: checkpoints, a diffusion run to sample from, a VAE, a
CLIP (or pretrained open_clip weights). Shapes and formats are checked here, so a damaged or
foreign file is one clear CheckpointError, never a traceback from deep inside torch."""

from inkfuse.lazy import lazy_names

_NAMES = {"Run": "inkfuse.artifacts.run", "load_run": "inkfuse.artifacts.run"}
__all__ = sorted(_NAMES)
__getattr__ = lazy_names(__name__, _NAMES)
