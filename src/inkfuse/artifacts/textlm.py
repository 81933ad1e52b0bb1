"""A text-LM run dir: `textlm.safetensors` (weights) and `textlm.json` (format tag,
architecture, recipe, tokenizer, metrics). Read and written only here; `artifacts.clip`'s
`load_conditioner` and `copy_clip` take such a dir as they take a CLIP's.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from inkfuse.artifacts.text_model import load_text_model, save_text_model
from inkfuse.config import TextLMConfig, TextLMModelConfig
from inkfuse.nn.textlm import TextLM
from inkfuse.text.tokenizer import BPETokenizer

FORMAT = "inkfuse-textlm-1"
WEIGHTS, META = "textlm.safetensors", "textlm.json"


def is_textlm_dir(path: str | Path) -> bool:
    """Whether `path` is a text-LM run dir (it holds textlm.json) rather than a CLIP's."""
    return (Path(path) / META).is_file()


def save_textlm(out_dir: Path, model: TextLM, tok: BPETokenizer, cfg: TextLMConfig,
                metrics: dict[str, Any]) -> None:
    save_text_model(out_dir, META, WEIGHTS, FORMAT, model, tok, cfg, metrics)


def load_textlm(run_dir: str | Path, device: str | torch.device = "cpu"
                ) -> tuple[TextLM, BPETokenizer, dict[str, Any]]:
    """(model in eval mode, tokenizer, the whole textlm.json) of a text-LM run dir, checked as
    every text encoder is (`artifacts.text_model`)."""
    return load_text_model(Path(run_dir), META, WEIGHTS, FORMAT, "text LM",
                           lambda model: TextLM(TextLMModelConfig(**model)),
                           "train one with `inkfuse textlm train`", device)
