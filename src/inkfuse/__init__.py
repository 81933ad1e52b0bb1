"""inkfuse: diffusion models from a plain U-Net to text-to-image.

    import inkfuse
    config = inkfuse.load_recipe("shapes", ["train.steps=500"])
    run_dir = inkfuse.train(config, "runs/shapes")
    run = inkfuse.load_run(run_dir)
    images = inkfuse.sample(run, 8, labels=[0, 1, 2, 3] * 2, guidance=3.0)   # [-1, 1] tensors
"""

from inkfuse.config import Config, load_recipe
from inkfuse.errors import CheckpointError, ConfigError, DataError, InkfuseError, TrainingError
from inkfuse.pipelines import Run, load_run, sample, sample_grid
from inkfuse.train import train

__version__ = "0.1.0"

__all__ = [
    "CheckpointError", "Config", "ConfigError", "DataError", "InkfuseError", "Run",
    "TrainingError", "load_recipe", "load_run", "sample", "sample_grid", "train",
]
