"""Training: the loop, EMA, checkpoints and resume, DDP under torchrun."""

from inkfuse.train.trainer import train

__all__ = ["train"]
