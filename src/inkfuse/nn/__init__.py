"""Networks that see only tensors: the U-Net and its blocks, the VAE, the CLIP towers."""

from inkfuse.lazy import lazy_names

_NAMES = {"UNet": "inkfuse.nn.unet", "build_model": "inkfuse.nn.unet"}
__all__ = sorted(_NAMES)
__getattr__ = lazy_names(__name__, _NAMES)
