"""A GAN run dir: `gan.safetensors` (the generator's EMA weights: all that sampling needs; the
discriminator lives on only in `checkpoint/`, for resuming) and `gan.json` (format tag,
resolved architecture, class names, recipe, metrics). Read and written only here.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from inkfuse.artifacts import checkpoint
from inkfuse.artifacts.checkpoint import load_tensors, read_json, save_tensors, write_json
from inkfuse.config import GANConfig, GANModelConfig, build_section
from inkfuse.errors import CheckpointError, ConfigError
from inkfuse.nn.gan import Generator

FORMAT = "inkfuse-gan-1"
WEIGHTS, META = "gan.safetensors", "gan.json"


def save_gan(run: Path, generator: Generator, cfg: GANConfig, class_names: list[str],
             metrics: dict[str, Any]) -> None:
    """Weights first, then the JSON that describes them; each file is replaced atomically."""
    run.mkdir(parents=True, exist_ok=True)
    save_tensors(run / WEIGHTS, generator.state_dict(), kind="gan")  # atomic itself
    write_json(run / META, {"format": FORMAT, "model": asdict(generator.cfg),
                            "class_names": class_names, "config": cfg.to_dict(),
                            "metrics": metrics})


def load_gan(run_dir: str | Path, device: str | torch.device = "cpu"
             ) -> tuple[Generator, dict[str, Any]]:
    """(the trained generator in eval mode, the whole gan.json) of a GAN run dir.

    Every tensor is checked against the architecture in gan.json (names, shapes, dtypes), so a
    file of another model is one CheckpointError naming the first mismatch."""
    run = Path(run_dir)
    if not (run / META).is_file() and checkpoint.find(run) is not None:
        raise CheckpointError(f"{run} holds a checkpoint but no finished model; run "
                              "`inkfuse gan train` with the same --out again to finish it")
    meta = read_json(run / META)  # missing or damaged: one line (schema.py)
    if meta["format"] != FORMAT:
        raise CheckpointError(f"{run / META} is not an inkfuse GAN (no '{FORMAT}' tag); "
                              "train one with `inkfuse gan train`")
    try:
        mcfg = build_section(GANModelConfig, meta["model"], "model", str(run / META))
        if not (mcfg.in_channels and mcfg.image_size):
            raise ValueError("in_channels and image_size must be resolved, not 0")
        generator = Generator(mcfg)
    except (ConfigError, TypeError, ValueError, RuntimeError) as e:
        raise CheckpointError(f"{run / META} has a broken model section ({e}); "
                              "train the model again") from None
    names = meta.get("class_names", [])
    if mcfg.num_classes and len(names) != mcfg.num_classes:
        raise CheckpointError(f"{run / META} names {len(names)} classes but the model has "
                              f"{mcfg.num_classes}; train the model again")
    weights = load_tensors(run / WEIGHTS)
    checkpoint.check_weights(weights, generator.state_dict(), run / WEIGHTS, META)
    generator.load_state_dict(weights)
    return generator.to(device).eval(), meta
