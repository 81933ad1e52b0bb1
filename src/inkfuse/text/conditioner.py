"""A frozen CLIP as the condition of a diffusion model: prompts in, `Condition`s out.

    text = load_conditioner("runs/clip", "cross-attention")
    cond = text.encode(["a red circle above a blue square"])   # what the U-Net is given
    null = text.empty_prompt()                                  # the empty prompt: CFG's null

The text model is frozen while the U-Net trains (as in Stable Diffusion and Imagen): the U-Net
learns to read a fixed space, so any prompt the CLIP can embed means something to it. The pooled
embedding (unit vector at `<eot>`) is the course's condition; the per-token features are what
latent diffusion cross-attends to; `mode` picks one or both. `encode_images` serves the course's
trick: train on CLIP image embeddings, sample from text embeddings of the same space.

Learned tokens (textual inversion, Gal et al. 2022) live here and in the tokenizer, nowhere else:
`add_token("<tok>", vector)` makes the tokenizer read "<tok>" as one new id and the text tower
look that id up in a new embedding row (`TokenTable`), every other weight untouched. So every
caller that encodes prompts through a conditioner (sampling, editing, the playground,
fine-tuning) reads learned tokens without knowing about them; `artifacts.tokens` loads a run's.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from inkfuse.diffusion.conditioning import Condition
from inkfuse.errors import ConfigError
from inkfuse.text.tokenizer import check_prompt, normalize

MODES = ("pooled", "cross-attention", "both")


class TokenTable(nn.Module):
    """A text tower's token embedding [V, W] with learned rows after it: id V + i reads row i.
    The table itself stays as it was (and frozen), so every prompt without a learned token
    embeds bit for bit as before; a row that is a Parameter requiring grad is what textual
    inversion trains."""

    def __init__(self, base: nn.Embedding):
        super().__init__()
        self.base = base
        self.rows = nn.ParameterList()

    @property
    def next_id(self) -> int:
        return self.base.num_embeddings + len(self.rows)

    def forward(self, ids: Tensor) -> Tensor:  # [B, L] -> [B, L, W]
        if not len(self.rows):
            return self.base(ids)
        return F.embedding(ids, torch.cat([self.base.weight, torch.stack(list(self.rows))]))


@dataclass
class TextConditioner:
    model: Any  # inkfuse CLIP or an adapter with the same methods (clip.pretrained)
    tokenizer: Any
    mode: str = "pooled"
    _identity: str | None = field(default=None, repr=False)

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

    def encode_ids(self, ids: Tensor, mask: Tensor, *, grad: bool = False) -> Condition:
        """Token ids [B, L] and their mask -> the condition (pooled, tokens, or both). Without
        `grad` no graph is built; with it the condition is differentiable w.r.t. whatever
        requires grad, which in a frozen encoder is only a learned row being trained."""
        with torch.set_grad_enabled(grad):
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

    @property
    def identity(self) -> str:
        """sha256 of the text encoder's weights as loaded, learned rows left out: what a learned
        token is tied to, since its row means something only to this encoder."""
        if self._identity is None:
            h = hashlib.sha256()
            for name, t in sorted(self.model.state_dict().items()):
                h.update(f"{name}:{t.dtype}:{list(t.shape)};".encode())
                h.update(t.detach().cpu().contiguous().flatten().view(torch.uint8).numpy())
            self._identity = h.hexdigest()
        return self._identity

    def _table(self) -> TokenTable:
        """The text tower's token embedding as a `TokenTable`, wrapped on first use (after the
        identity is taken). Only inkfuse text towers (`nn.clip.TextEncoder`: a CLIP's, a text
        LM's) have one to extend."""
        tower = getattr(self.model, "text", None)
        table = getattr(tower, "token", None)
        if isinstance(table, TokenTable):
            return table
        if not isinstance(table, nn.Embedding) or not hasattr(self.tokenizer, "add_token"):
            raise ConfigError("learned tokens need an inkfuse text encoder (a CLIP or text-LM "
                              "run dir); this run's pretrained open_clip model cannot take them")
        _ = self.identity  # hashed while the table is still the encoder's own
        tower.token = TokenTable(table)
        return tower.token

    @property
    def learned(self) -> list[str]:
        """The learned tokens prompts may use, in the order they were added."""
        return list(getattr(self.tokenizer, "added", ()))

    def blank_row(self) -> Tensor:
        """Zeros [width] of the token table's dtype and device: what a learned row must match."""
        base = self._table().base.weight
        return base.new_zeros(base.shape[1])

    @torch.no_grad()
    def embedding_of(self, words: str) -> Tensor:
        """The mean input embedding [width] of the tokens `words` encode to, read as in the
        middle of a caption (with the space before it): where a learned token starts (Gal et
        al. start from a coarse descriptor's embedding)."""
        ids = self.tokenizer.encode(" " + normalize(words), normalize_text=False)
        return self._table()(torch.tensor(ids, device=self.device)).float().mean(0)

    def add_token(self, token: str, vector: Tensor) -> None:
        """Read `token` in prompts as one new embedding row `vector` [width]. A Parameter is
        used as it is, so that training it changes what prompts read; any other tensor is
        copied in, frozen. A string that cannot be a token is a ConfigError (see
        `BPETokenizer.check_new_token`), and then nothing changes."""
        table = self._table()
        if vector.shape != (table.base.embedding_dim,):
            raise ValueError(f"a learned row is [{table.base.embedding_dim}], got "
                             f"{list(vector.shape)}")
        row = vector if isinstance(vector, nn.Parameter) else nn.Parameter(
            vector.detach().to(table.base.weight).clone(), requires_grad=False)
        self.tokenizer.add_token(token, table.next_id)
        table.rows.append(row)

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
