"""Noise schedules, the denoiser view of a network (its training loss and its predictions),
guidance and samplers. Knows nothing of files or the CLI."""

from inkfuse.diffusion.conditioning import Condition
from inkfuse.diffusion.denoiser import Denoiser, Prediction
from inkfuse.diffusion.guidance import cfg
from inkfuse.diffusion.objectives import loss_weight
from inkfuse.diffusion.samplers import SAMPLERS
from inkfuse.diffusion.schedule import Schedule, timesteps
from inkfuse.diffusion.thresholding import threshold

__all__ = [
    "SAMPLERS", "Condition", "Denoiser", "Prediction", "Schedule", "cfg", "loss_weight",
    "threshold", "timesteps",
]
