"""A frozen CLIP as the condition of a diffusion model: prompts in, `Condition`s out.

    text = load_conditioner("runs/clip", "cross-attention")
    cond = text.encode(["a red circle above a blue square"])   # what the U-Net is given
    null = text.empty_prompt()                                  # the empty prompt: CFG's null

The text model is frozen while the U-Net trains (as in Stable Diffusion and Imagen): the U-Net
learns to read a fixed space, so any prompt the CLIP can embed means something to it. The pooled
embedding (unit vector at `<eot>`) is the course's condition; the per-token features are what
latent diffusion cross-attends to; `mode` picks one or both. `encode_images` serves the course's
trick: train on CLIP image embeddings, sample from text embeddings of the same space.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from inkfuse.diffusion.conditioning import Condition
from inkfuse.text.tokenizer import check_prompt

MODES = ("pooled", "cross-attention", "both")


@dataclass
class TextConditioner:
    model: Any  # inkfuse CLIP or an adapter with the same methods (clip.pretrained)
    tokenizer: Any
    mode: str = "pooled"

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def pooled_dim(self) -> int:
        return self.model.cfg.embed_dim if self.mode != "cross-attention" else 0

    @property
    def token_dim(self) -> int:
        return self.model.cfg.width if self.mode != "pooled" else 0

    def check(self, prompt: str) -> None:
        """Refuse words the CLIP never read: BPE would encode them, but their embedding means
        nothing, and a silently ignored word is worse than an error."""
        check_prompt(self.tokenizer, prompt)

    def tokenize(self, prompts: list[str], *, allow_empty: bool = False) -> tuple[Tensor, Tensor]:
        return self.tokenizer.batch(prompts, self.model.cfg.context_length,
                                    allow_empty=allow_empty)

    @torch.no_grad()
    def encode_ids(self, ids: Tensor, mask: Tensor) -> Condition:
        """Token ids [B, L] and their mask -> the condition (pooled, tokens, or both)."""
        ids, mask = ids.to(self.device), mask.to(self.device)
        vector = self.model.encode_text(ids, mask).float() if self.pooled_dim else None
        tokens = None
        if self.token_dim:
            tokens = self.model.encode_text_tokens(ids, mask)[0].float()
        drop = torch.zeros(ids.shape[0], dtype=torch.bool, device=self.device)
        return Condition(vector, drop, tokens, mask if tokens is not None else None)

    def encode(self, prompts: list[str]) -> Condition:
        """Checked prompts -> their condition (one row per prompt)."""
        for prompt in prompts:
            self.check(prompt)
        return self.encode_ids(*self.tokenize(prompts))

    def empty_prompt(self) -> Condition:
        """The empty prompt's encoding (one row): the null condition of text models, which the
        `Denoiser` writes into dropped rows (`Denoiser(..., null=text.empty_prompt())`)."""
        return self.encode_ids(*self.tokenize([""], allow_empty=True))

    @torch.no_grad()
    def encode_images(self, images: Tensor, batch: int = 512) -> Tensor:
        """uint8 images [N, C, H, W] -> CLIP image embeddings [N, D] (unit vectors)."""
        out = []
        for i in range(0, len(images), batch):
            x = images[i:i + batch].to(self.device).float().div(127.5).sub(1)
            out.append(self.model.encode_image(x).float())
        return torch.cat(out)


def is_pretrained(spec: str) -> bool:
    return spec.startswith("open_clip:")
