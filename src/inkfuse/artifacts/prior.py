"""The diffusion prior of an unCLIP run, `RUN/prior/`: `prior.safetensors` (the EMA weights) and
`prior.json` (format tag, resolved architecture, the `[prior]` table it was trained and samples
with, its training recipe, metrics); beside them the prior's own `checkpoint/` and `log.jsonl`
from the shared loop, so it resumes like every model. Read and written only here; `Prior` is
what a loaded run holds of it (`Run.prior`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from inkfuse.artifacts import checkpoint
from inkfuse.artifacts.checkpoint import load_tensors, read_json, save_tensors, write_json
from inkfuse.config import PriorConfig, PriorModelConfig, Recipe, build_section
from inkfuse.diffusion import Condition, Denoiser, Schedule, cfg
from inkfuse.diffusion.guidance import Guided
from inkfuse.errors import CheckpointError, ConfigError
from inkfuse.nn.prior import PriorTransformer
from inkfuse.text.conditioner import TextConditioner

FORMAT = "inkfuse-prior-1"
HOME, WEIGHTS, META = "prior", "prior.safetensors", "prior.json"


def prior_dir(run_dir: str | Path) -> Path:
    """Where a decoder run keeps its prior."""
    return Path(run_dir) / HOME


def prior_schedule(p: PriorModelConfig) -> Schedule:
    """The prior's diffusion, for its training and its sampling alike: DALL-E 2's cosine."""
    return Schedule("cosine", p.timesteps)


def prior_text(text: TextConditioner) -> TextConditioner:
    """The decoder's frozen CLIP (the same model and tokenizer) as the prior reads it: pooled
    embedding and token features."""
    return replace(text, mode="both")


def prior_denoiser(net: Callable[..., Tensor], schedule: Schedule, null: Condition) -> Denoiser:
    """The prior under its parameterisation, for its loss and its sampling alike: x̂0 (DALL-E 2),
    the empty prompt's encoding in dropped rows, no clipping (its space is not bounded like
    pixels)."""
    return Denoiser(net, schedule, "x0", clip=None, null=null)


@dataclass
class Prior:
    """A trained prior ready to sample: its network (eval mode), schedule, `[prior]` settings,
    the CLIP it reads prompts with (`prior_text`) and that CLIP's empty prompt (CFG's null)."""

    net: PriorTransformer
    schedule: Schedule
    settings: PriorConfig
    text: TextConditioner
    null: Condition

    def denoiser(self, guidance: float) -> Guided:
        """`prior_denoiser`, guided with weight `guidance`."""
        return cfg(prior_denoiser(self.net, self.schedule, self.null), guidance)


def save_prior(home: Path, net: PriorTransformer, settings: PriorConfig, recipe: Recipe,
               metrics: dict[str, Any]) -> None:
    """Weights first, then the JSON that describes them; each file replaced atomically."""
    home.mkdir(parents=True, exist_ok=True)
    save_tensors(home / WEIGHTS, net.state_dict(), kind="prior")
    write_json(home / META, {"format": FORMAT, "model": asdict(net.cfg),
                             "prior": asdict(settings), "config": recipe.to_dict(),
                             "metrics": metrics})


def read_prior_meta(home: Path) -> dict[str, Any]:
    """The whole prior.json of a finished prior, its structure and format tag checked."""
    meta = read_json(home / META)  # missing or damaged: one line (schema.py)
    if meta["format"] != FORMAT:
        raise CheckpointError(f"{home / META} is not an inkfuse prior (no '{FORMAT}' tag); "
                              f"train one with `inkfuse prior train {home.parent}`")
    return meta


def load_prior(run_dir: str | Path, text: TextConditioner, device: str | torch.device = "cpu"
               ) -> Prior | None:
    """The prior of decoder run `run_dir`, reading prompts with the run's CLIP `text`; None when
    the run has none. A prior still training (a checkpoint, no prior.json) is refused rather
    than ignored: sampling would silently fall back to the text embedding."""
    home = prior_dir(run_dir)
    if not (home / META).is_file():
        if checkpoint.find(home) is not None:
            raise CheckpointError(f"{home} holds an unfinished prior; finish it with `inkfuse "
                                  f"prior train {run_dir}`, or sample with --no-prior")
        return None
    meta = read_prior_meta(home)
    source = str(home / META)
    try:
        arch = build_section(PriorModelConfig, meta["model"], "model", source)
        settings = build_section(PriorConfig, meta["prior"], "prior", source)
        net = PriorTransformer(arch)
    except (ConfigError, TypeError, ValueError, RuntimeError) as e:
        raise CheckpointError(f"{source} has a broken model section ({e}); train the prior "
                              "again (delete the folder, then `inkfuse prior train`)") from None
    both = prior_text(text)
    if (arch.embed_dim, arch.token_dim) != (both.pooled_dim, both.token_dim):
        raise CheckpointError(f"{home} was trained on another CLIP (embedding {arch.embed_dim}, "
                              f"tokens {arch.token_dim} wide; this run's: {both.pooled_dim}, "
                              f"{both.token_dim}); delete it and run `inkfuse prior train "
                              f"{run_dir}`")
    weights = load_tensors(home / WEIGHTS)
    checkpoint.check_weights(weights, net.state_dict(), home / WEIGHTS, META,
                             fix="delete the folder and train the prior again")
    net.load_state_dict(weights)
    net.to(device).eval().requires_grad_(False)
    return Prior(net, prior_schedule(arch), settings, both, both.empty_prompt())
