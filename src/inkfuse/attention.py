"""Where the words go: the U-Net's cross-attention from image positions to prompt tokens,
recorded while a prompt is sampled — the picture that shows binding working or failing.

For each cross-attention layer and each recorded step, the conditional branch's attention
softmax(q kᵀ / sqrt(d)) [heads, H·W, L] is averaged over heads, enlarged from the layer's
feature map to the image's size (bilinear) and averaged over layers and steps. Every pixel's
weights over the prompt's tokens sum to 1, before and after averaging, so the maps of one
prompt compare directly: a token that owns a region takes its weight from the others.

    maps = cross_attention_maps(run, "a red circle above a blue square", steps=25)
    maps.tokens   # ['<sot>', 'a', 'red', 'circle', ..., '<eot>']
    maps.maps     # [L, H, W]; maps.image: [C, H, W] in [-1, 1]
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from inkfuse.artifacts.run import Run
from inkfuse.errors import ConfigError
from inkfuse.nn.blocks import CrossAttention
from inkfuse.pipelines import sample


@dataclass
class AttentionMaps:
    image: Tensor  # [C, H, W] in [-1, 1]: the sample the maps were recorded on
    maps: Tensor  # [L, H, W]: per token, its share of each pixel's attention
    tokens: list[str]  # L labels, <sot> and <eot> included


def token_labels(run: Run, prompt: str) -> list[str]:
    """The prompt's tokens as the text encoder reads them, <sot> and <eot> included."""
    ids, mask = run.text.tokenize([prompt])
    tok = getattr(run.text, "tokenizer", None)
    special = {getattr(tok, "sot", None): "<sot>", getattr(tok, "eot", None): "<eot>"}
    if tok is None:  # a pretrained encoder's tokenizer: positions only
        return [f"#{j}" for j in range(int(mask[0].sum()))]
    return [special.get(i) or tok.decode([i]).strip() or "·"  # "·": a token of spaces only
            for i in ids[0][mask[0]].tolist()]


@torch.no_grad()
def cross_attention_maps(run: Run, prompt: str, *, steps: int = 25, sampler: str | None = None,
                         guidance: float | None = None, seed: int = 0,
                         at: Sequence[float] | None = None) -> AttentionMaps:
    """Sample `prompt` once and record its cross-attention maps (see the module doc).

    `at` chooses the steps recorded, as fractions of the walk from noise (0) to the image (1);
    by default every step. The sampler and guidance default to the run's recipe."""
    layers = [m for m in run.net.modules() if isinstance(m, CrossAttention)]
    if run.text is None or not layers:
        raise ConfigError(f"{run.dir} has no cross-attention to draw: train it with "
                          "text.conditioning = 'cross-attention' or 'both'")
    s = run.config.sample
    guidance = s.guidance if guidance is None else guidance
    if guidance <= 0:
        raise ConfigError("--guidance 0 samples without the prompt: its attention maps would "
                          "be the empty prompt's; use a weight > 0")
    labels = token_labels(run, prompt)
    chosen = None if at is None else {min(steps - 1, round(f * (steps - 1))) for f in at}
    size = run.image_shape[1:]
    total = torch.zeros(len(labels), *size)
    state = {"step": 0, "recorded": 0}

    def record(module: CrossAttention, inputs: tuple[Tensor, ...], output: Tensor) -> None:
        if chosen is not None and state["step"] not in chosen:
            return
        x, tokens, mask = inputs  # row 0 is the prompt: CFG batches [prompt, empty prompt]
        h, w = x.shape[-2:]
        with torch.autocast(x.device.type, enabled=False):  # the picture in full precision
            weights = module.attention_weights(x[:1].float(), tokens[:1].float(),
                                               mask[:1]).mean(1)[0]  # [h·w, L]
        grid = weights[:, : len(labels)].T.reshape(len(labels), 1, h, w)  # [L, 1, h, w]
        total.add_(F.interpolate(grid.cpu(), size=size, mode="bilinear",
                                 align_corners=False)[:, 0])
        state["recorded"] += 1

    def next_step(i: int, x: Tensor, pred: object) -> None:
        state["step"] = i + 1

    handles = [layer.register_forward_hook(record) for layer in layers]
    try:
        image = sample(run, 1, prompts=[prompt], sampler=sampler or s.sampler, steps=steps,
                       guidance=guidance, seed=seed, progress=False, on_step=next_step)
    finally:
        for handle in handles:
            handle.remove()
    return AttentionMaps(image[0], total / max(state["recorded"], 1), labels)
