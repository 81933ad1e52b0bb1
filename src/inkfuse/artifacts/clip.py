"""A CLIP run dir: `clip.safetensors` (weights) and `clip.json` (format tag, architecture,
recipe, tokenizer, metrics), or a pretrained `open_clip:MODEL:WEIGHTS` (`artifacts.open_clip`).
Read, written and copied only here; `text.conditioner` is what a diffusion run makes of it.
"""

from __future__ import annotations

from dataclasses import asdict, fields
from pathlib import Path
from typing import Any

import torch

from inkfuse.artifacts.checkpoint import (
    check_weights,
    load_tensors,
    read_json,
    save_tensors,
    write_json,
)
from inkfuse.artifacts.open_clip import is_open_clip_spec, load_open_clip_spec
from inkfuse.config import ClipConfig, ClipModelConfig, ClipSettings
from inkfuse.errors import CheckpointError, ConfigError
from inkfuse.io import copy_files
from inkfuse.nn.clip import CLIP
from inkfuse.text.conditioner import MODES, TextConditioner
from inkfuse.text.tokenizer import BPETokenizer

FORMAT = "inkfuse-clip-1"
WEIGHTS, META = "clip.safetensors", "clip.json"


def save_clip(out_dir: Path, model: CLIP, tok: BPETokenizer, cfg: ClipConfig,
              metrics: dict[str, Any]) -> None:
    """Weights first, then the JSON that describes them; each file is replaced atomically."""
    out_dir.mkdir(parents=True, exist_ok=True)
    save_tensors(out_dir / WEIGHTS, model.state_dict(), kind="clip")  # atomic itself
    write_json(out_dir / META, {"format": FORMAT, "model": asdict(model.cfg),
                                "config": cfg.to_dict(), "tokenizer": tok.to_dict(),
                                "metrics": metrics})


# clip.json before recipes had tables held its settings flat, under "train"
_FLAT = {"data": "data.name", "path": "data.path", "size": "data.size", "count": "data.count",
         "max_objects": "data.max_objects", "caption_dropout": "data.caption_dropout",
         **{f.name: f"clip.{f.name}" for f in fields(ClipSettings)},
         **{k: f"train.{k}" for k in ("steps", "batch_size", "lr", "weight_decay",
                                      "warmup_steps", "precision", "device", "seed")}}


def clip_recipe(meta: dict[str, Any], source: str = META) -> ClipConfig:
    """The recipe a CLIP run dir was trained with, from its clip.json (`load_clip`'s third
    value): what `inkfuse clip score` needs to draw the same held-out pairs again."""
    raw: dict[str, Any] = {"data": {}, "clip": {}, "train": {}}
    if "config" in meta:
        raw = meta["config"]
    try:
        for key, value in meta.get("train", {}).items():
            section, name = _FLAT.get(key, f"clip.{key}").split(".")
            cut = key == "device" and isinstance(value, str)
            raw.setdefault(section, {})[name] = value.split(":")[0] if cut else value  # cuda:1
        return ClipConfig.from_dict(raw, source)
    except (ConfigError, TypeError, AttributeError) as e:  # a section that is not a table
        raise CheckpointError(f"{source} holds no recipe of this inkfuse version ({e}); "
                              "train the CLIP again") from None


def load_clip(run_dir: str | Path, device: str | torch.device = "cpu", *, trust: bool = False
              ) -> tuple[CLIP, BPETokenizer, dict[str, Any]]:
    """(model in eval mode, tokenizer, the whole clip.json) of a CLIP run dir, or of
    a pretrained model named `open_clip:MODEL:WEIGHTS` (see `artifacts.open_clip`; its model
    and tokenizer have the same methods).

    Every tensor is checked against the architecture in clip.json, so weights of another model
    give a CheckpointError naming the first mismatch rather than a shape error deep in torch.
    `trust` lets open_clip weights that could run code be loaded (see `load_open_clip`).
    """
    if is_open_clip_spec(run_dir):
        return load_open_clip_spec(str(run_dir), device, trust=trust)
    run = Path(run_dir)
    meta = read_json(run / META)
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CheckpointError(f"{run / META} is not an inkfuse CLIP (no '{FORMAT}' tag); "
                              "train one with `inkfuse clip train`")
    try:
        mcfg = ClipModelConfig(**meta["model"])
        model = CLIP(mcfg)
    except (KeyError, TypeError, ValueError, RuntimeError) as e:
        raise CheckpointError(f"{run / META} has a broken model section ({e}); "
                              "train the model again") from None
    tok = BPETokenizer.from_dict(meta.get("tokenizer"), f"{run / META} tokenizer")
    if tok.vocab_size != mcfg.vocab_size:
        raise CheckpointError(f"{run / META}: the tokenizer has {tok.vocab_size} tokens but the "
                              f"model {mcfg.vocab_size}; the run dir is mixed up, train again")
    weights = load_tensors(run / WEIGHTS)
    check_weights(weights, model.state_dict(), run / WEIGHTS, META)
    model.load_state_dict(weights)
    return model.to(device).eval(), tok, meta


def load_conditioner(spec: str | Path, mode: str, device: str | torch.device = "cpu", *,
                     trust: bool = False) -> TextConditioner:
    """A CLIP run dir (or `open_clip:MODEL:WEIGHTS`) as a frozen text conditioner."""
    if mode not in MODES:
        raise ConfigError(f"text.conditioning = {mode!r} is not one of: {', '.join(MODES)}")
    model, tokenizer, _ = load_clip(str(spec), device=device, trust=trust)
    model.requires_grad_(False)
    return TextConditioner(model, tokenizer, mode)


def copy_clip(src: str | Path, dst: Path) -> None:
    """Copy a CLIP run's weights and description into `dst`, so a diffusion run dir keeps the
    text encoder it was trained with even if the original is moved or retrained."""
    load_clip(src)  # refuse a broken CLIP before copying anything
    copy_files(src, dst, (WEIGHTS, META))
