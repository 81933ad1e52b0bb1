"""CLIP as a training kind: a CNN image tower and a transformer text tower trained contrastively
on image-caption pairs (`data.captions`), each pair of a batch the others' negative; then saved
(`artifacts.clip`) and scored on held-out pairs (`metrics.clip`).

    config = load_recipe("clip-shapes", ["train.steps=400"])
    train(config, "runs/clip")          # runs/clip/clip.json: architecture, recipe, metrics

The BPE tokenizer is learned from the training captions first; with `data.caption_dropout`,
each step draws one of a caption's shorter variants (size, colour, position left out), so
prompts as short as "a red circle" embed well. Under `torchrun` each rank contrasts its own
slice of the global batch.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor, nn

from inkfuse.artifacts.clip import save_clip
from inkfuse.artifacts.log import LOG, read_log
from inkfuse.config import ClipConfig, ClipModelConfig
from inkfuse.data.captions import Pairs, folder_pairs, shapes_pairs, to_float
from inkfuse.data.shapes import (
    KEEPS,
    MAX_HARD_NEGATIVES,
    caption_variants,
    hard_negatives,
    variant_probs,
)
from inkfuse.metrics.clip import evaluate_clip
from inkfuse.nn.clip import CLIP
from inkfuse.text.tokenizer import BPETokenizer
from inkfuse.train.loop import HELD_OUT_SEED, Kind


def clip_pairs(cfg: ClipConfig) -> tuple[Pairs, Pairs]:
    """(training pairs, held-out pairs): shapes drawn from another seed, or the last tenth (at
    most clip.eval_count) of a captioned folder."""
    d, n_held = cfg.data, cfg.clip.eval_count
    if d.name == "shapes":
        count = min(d.count, d.limit or d.count)
        return (shapes_pairs(count, d.size, cfg.train.seed, d.max_objects, d.withhold),
                shapes_pairs(n_held, d.size, cfg.train.seed + HELD_OUT_SEED, d.max_objects,
                             d.withhold))
    pairs = folder_pairs(d.path, d.size)
    n = min(n_held, max(1, len(pairs.captions) // 10))
    return Pairs(pairs.images[:-n], pairs.captions[:-n]), Pairs(pairs.images[-n:],
                                                                 pairs.captions[-n:])


def tokenize_variants(variants: list[list[str]], vocab_size: int, context_length: int,
                      device: torch.device) -> tuple[BPETokenizer, Tensor, Tensor]:
    """A BPE tokenizer learned from every version of every caption, and the captions as
    (ids, mask) [N, V, L] on `device`: V versions of each, one drawn per step."""
    flat = [text for options in variants for text in options]
    tok = BPETokenizer.train(flat, vocab_size)
    ids, mask = tok.batch(flat, context_length)
    return tok, *(t.view(len(variants), len(variants[0]), -1).to(device) for t in (ids, mask))


def trim(ids: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
    """Cut the padding that no caption of the batch reaches: padded keys are masked anyway, and
    shapes captions fill about 14 of the 32 positions, so the text tower does half the work."""
    n = int(mask.sum(1).max())
    return ids[:, :n], mask[:, :n]


class NegativeCaptions:
    """Every image's hard negatives (`shapes.hard_negatives`) for each of its caption variants,
    tokenized once: distinct captions [U, L], and per image and variant the indices of its
    negatives [N, V, 4] (repeated cyclically where it has fewer) and their count [N, V]."""

    def __init__(self, scenes: list, keeps: tuple, tok: BPETokenizer, context_length: int,
                 device: torch.device):
        table: dict[str, int] = {}
        index = torch.zeros(len(scenes), len(keeps), MAX_HARD_NEGATIVES, dtype=torch.long)
        self.count = torch.zeros(len(scenes), len(keeps), dtype=torch.long)
        for n, scene in enumerate(scenes):
            for v, keep in enumerate(keeps):
                found = list(hard_negatives(scene, keep).values())
                # never empty: one object always changes kind, two always reverse the relation
                self.count[n, v] = len(found)
                for j in range(MAX_HARD_NEGATIVES):
                    index[n, v, j] = table.setdefault(found[j % len(found)], len(table))
        self.index, self.count = index.to(device), self.count.to(device)
        self.ids, self.mask = (t.to(device) for t in tok.batch(list(table), context_length))

    def draw(self, i: Tensor, v: Tensor, k: int, gen: torch.Generator) -> tuple[Tensor, Tensor]:
        """k negatives of each image i's variant v, uniformly among its own, as (ids, mask)
        [B · k, L]."""
        u = torch.rand(len(i), k, generator=gen, device=i.device)
        j = (u * self.count[i, v, None]).long()  # [B, k] which of the image's negatives
        rows = self.index[i, v].gather(1, j).flatten()
        return self.ids[rows], self.mask[rows]


class ClipKind(Kind):
    label = "clip"
    sections = ("data", "clip")

    def setup(self) -> None:
        config, device = self.config, self.device
        train, self.held = clip_pairs(config)
        c = config.clip
        # [N, V, L]: V versions of each caption, one drawn per step (V = 1 without dropout)
        variants, keep_prob = [[text] for text in train.captions], torch.ones(1)
        if train.scenes is not None and config.data.caption_dropout > 0:
            variants = [caption_variants(s) for s in train.scenes]
            keep_prob = variant_probs(config.data.caption_dropout)
        self.tok, self.ids, self.mask = tokenize_variants(variants, c.vocab_size,
                                                          c.context_length, device)
        self.keep_prob = keep_prob.to(device)
        self.images = train.images.to(device)  # uint8 [N, C, S, S]
        self.size = len(train.captions)
        self.negatives = None
        if c.hard_negatives:  # the variants in KEEPS order, or the full caption only
            keeps = KEEPS if len(variants[0]) > 1 else KEEPS[:1]
            self.negatives = NegativeCaptions(train.scenes, keeps, self.tok, c.context_length,
                                              device)

    def make_model(self) -> nn.Module:
        c = self.config.clip
        self.model = CLIP(ClipModelConfig(
            image_size=self.config.data.size, in_channels=self.images.shape[1],
            channels=c.channels, vocab_size=self.tok.vocab_size,
            context_length=c.context_length, width=c.width, layers=c.layers, heads=c.heads,
            embed_dim=c.embed_dim)).to(self.device)
        return self.model

    def param_groups(self, model: nn.Module) -> list[dict]:
        """No weight decay on gains, biases, the position embedding or the temperature (as in
        CLIP): decaying them pulls scales and offsets towards 0 for no regularising gain."""
        named = list(model.named_parameters())
        decay = [p for n, p in named if p.ndim >= 2 and n != "text.position"]
        rest = [p for n, p in named if p.ndim < 2 or n == "text.position"]
        return [{"params": decay}, {"params": rest, "weight_decay": 0.0}]

    def batch(self, idx: Tensor, gen: torch.Generator) -> tuple[Tensor, ...]:
        """Images, one caption variant each, and with clip.hard_negatives that many negatives
        of the same variant per image (flattened: [B · K, L])."""
        i = idx.to(self.device)
        v = torch.multinomial(self.keep_prob, len(i), replacement=True, generator=gen)
        batch = (to_float(self.images[i]), *trim(self.ids[i, v], self.mask[i, v]))
        if self.negatives is not None:
            batch += trim(*self.negatives.draw(i, v, self.config.clip.hard_negatives, gen))
        return batch

    def loss(self, forward: nn.Module, batch: tuple[Tensor, ...],
             gen: torch.Generator) -> tuple[Tensor, dict[str, float]]:
        return forward(*batch), {}

    def finish(self, step: int, weights: dict[str, Tensor]) -> None:
        """Score the final weights on the held-out pairs; save them with the tokenizer."""
        self.model.load_state_dict(weights)
        losses = [r["loss"] for r in read_log(self.run_dir / LOG)]
        metrics = {"steps": step}
        if losses:
            metrics |= {"loss_first": losses[0], "loss_last": float(np.mean(losses[-10:]))}
        metrics |= evaluate_clip(self.model, self.tok, self.config, self.held,
                                 self.run_dir / "similarity.png")
        save_clip(self.run_dir, self.model, self.tok, self.config, metrics)
