"""A CLIP run dir: `clip.safetensors` (weights) and `clip.json` (format tag, architecture,
recipe, tokenizer, metrics), or a pretrained `open_clip:MODEL:WEIGHTS` (`artifacts.open_clip`).
Read, written and copied only here; `text.conditioner` is what a diffusion run makes of it. A
text-LM run dir (`artifacts.textlm`) is a frozen text encoder too: `load_conditioner` and
`copy_clip` take either, by the JSON file the dir holds.
"""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path
from typing import Any

import torch

from inkfuse.artifacts.open_clip import is_open_clip_spec, load_open_clip_spec
from inkfuse.artifacts.text_model import load_text_model, save_text_model
from inkfuse.artifacts.textlm import META as TEXTLM_META
from inkfuse.artifacts.textlm import WEIGHTS as TEXTLM_WEIGHTS
from inkfuse.artifacts.textlm import is_textlm_dir, load_textlm
from inkfuse.artifacts.tokens import load_tokens
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
    save_text_model(out_dir, META, WEIGHTS, FORMAT, model, tok, cfg, metrics)


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
    return load_text_model(Path(run_dir), META, WEIGHTS, FORMAT, "CLIP",
                           lambda model: CLIP(ClipModelConfig(**model)),
                           "train one with `inkfuse clip train`", device)


def load_text_encoder(spec: str | Path, device: str | torch.device = "cpu", *,
                      trust: bool = False) -> tuple[Any, BPETokenizer, dict[str, Any]]:
    """(model in eval mode, tokenizer, its JSON) of a text-LM run dir (it holds textlm.json),
    else of a CLIP (`load_clip`): the two have the same text methods."""
    if not is_open_clip_spec(spec) and is_textlm_dir(spec):
        return load_textlm(spec, device)
    return load_clip(str(spec), device=device, trust=trust)


def load_conditioner(spec: str | Path, mode: str, device: str | torch.device = "cpu", *,
                     trust: bool = False, tokens: str | Path | None = None) -> TextConditioner:
    """A CLIP run dir, a text-LM run dir (or `open_clip:MODEL:WEIGHTS`) as a frozen text
    conditioner, reading the learned tokens in the folder `tokens` (a run's RUN/tokens,
    `artifacts.tokens`) if given."""
    if mode not in MODES:
        raise ConfigError(f"text.conditioning = {mode!r} is not one of: {', '.join(MODES)}")
    model, tokenizer, _ = load_text_encoder(spec, device, trust=trust)
    model.requires_grad_(False)
    text = TextConditioner(model, tokenizer, mode)
    if tokens is not None:
        load_tokens(tokens, text)
    return text


def copy_clip(src: str | Path, dst: Path) -> None:
    """Copy a CLIP's (or a text LM's) weights and description into `dst`, so a diffusion run
    dir keeps the text encoder it was trained with even if the original is moved or retrained."""
    load_text_encoder(src)  # refuse a broken model before copying anything
    copy_files(src, dst, (TEXTLM_WEIGHTS, TEXTLM_META) if is_textlm_dir(src) else (WEIGHTS, META))
