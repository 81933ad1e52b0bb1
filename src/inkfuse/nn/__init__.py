"""Networks: the U-Net and its building blocks (later the VAE and CLIP towers)."""

from inkfuse.nn.unet import UNet, build_model

__all__ = ["UNet", "build_model"]
