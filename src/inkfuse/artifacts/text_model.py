"""What every text-encoder run dir (a CLIP's `clip.json`, a text LM's `textlm.json`) is read
with: the format tag, the model section, the tokenizer that must match the model, and weights
checked against the architecture before they are loaded. `artifacts.clip` and
`artifacts.textlm` each name their files and classes; this is their one reading path.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from torch import nn

from inkfuse.artifacts.checkpoint import (
    check_weights,
    load_tensors,
    read_json,
    save_tensors,
    write_json,
)
from inkfuse.errors import CheckpointError
from inkfuse.text.tokenizer import BPETokenizer


def save_text_model(out_dir: Path, meta_name: str, weights_name: str, fmt: str, model: nn.Module,
                    tok: BPETokenizer, cfg: Any, metrics: dict[str, Any]) -> None:
    """Weights first, then the JSON that describes them (format tag, architecture, recipe,
    tokenizer, metrics); each file is replaced atomically, so a reader never finds JSON that
    describes weights not yet written."""
    out_dir.mkdir(parents=True, exist_ok=True)
    save_tensors(out_dir / weights_name, model.state_dict(), kind=Path(meta_name).stem)
    write_json(out_dir / meta_name, {"format": fmt, "model": asdict(model.cfg),
                                     "config": cfg.to_dict(), "tokenizer": tok.to_dict(),
                                     "metrics": metrics})


def load_text_model(run: Path, meta_name: str, weights_name: str, fmt: str, what: str,
                    build: Callable[[dict[str, Any]], nn.Module], how: str,
                    device: str | torch.device) -> tuple[Any, BPETokenizer, dict[str, Any]]:
    """(model in eval mode, tokenizer, the whole JSON) of `run`.

    `build(meta["model"])` makes the network from its architecture; `what` names the kind in
    messages ("CLIP"), `how` says how to make one. Every tensor is checked against the
    architecture, so weights of another model give a CheckpointError naming the first mismatch
    rather than a shape error deep in torch; a tokenizer that is not the model's is refused
    before any weight is read."""
    meta = read_json(run / meta_name)
    if not isinstance(meta, dict) or meta.get("format") != fmt:
        raise CheckpointError(f"{run / meta_name} is not an inkfuse {what} (no '{fmt}' tag); "
                              f"{how}")
    try:
        model = build(meta["model"])
    except (KeyError, TypeError, ValueError, RuntimeError) as e:
        raise CheckpointError(f"{run / meta_name} has a broken model section ({e}); "
                              "train the model again") from None
    tok = BPETokenizer.from_dict(meta.get("tokenizer"), f"{run / meta_name} tokenizer")
    if tok.vocab_size != model.cfg.vocab_size:
        raise CheckpointError(f"{run / meta_name}: the tokenizer has {tok.vocab_size} tokens but "
                              f"the model {model.cfg.vocab_size}; the run dir is mixed up, train "
                              "again")
    weights = load_tensors(run / weights_name)
    check_weights(weights, model.state_dict(), run / weights_name, meta_name)
    model.load_state_dict(weights)
    return model.to(device).eval(), tok, meta
