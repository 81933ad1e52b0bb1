"""The text LM as a training kind: a bidirectional transformer learns the captions alone as a
masked language model (`nn.textlm`), then is saved (`artifacts.textlm`) as the frozen text
encoder of an Imagen-style diffusion run.

    config = load_recipe("textlm-shapes", ["train.steps=400"])
    train(config, "runs/textlm")        # runs/textlm/textlm.json: architecture, recipe, metrics

As for the CLIP (`train.clip`), the BPE tokenizer is learned from the training captions first
and, with `data.caption_dropout`, each step draws one of a caption's shorter variants, so short
prompts are text the encoder has read. The masked positions and replacement tokens come from the
step's generator, so a resumed run ends with the same weights as one that never stopped. The
final model is scored on held-out captions (shapes of another seed, or a folder's last tenth):
how often it names a hidden token, against the best constant guess.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from inkfuse.artifacts.log import LOG, read_log
from inkfuse.artifacts.textlm import save_textlm
from inkfuse.config import TextLMConfig, TextLMModelConfig
from inkfuse.data.captions import folder_pairs
from inkfuse.data.shapes import (
    caption,
    caption_variants,
    excluded,
    random_scenes,
    variant_probs,
)
from inkfuse.nn.textlm import TextLM
from inkfuse.train.clip import ClipKind, tokenize_variants, trim
from inkfuse.train.loop import HELD_OUT_SEED, Kind

EVAL_BATCH = 512


def textlm_captions(cfg: TextLMConfig) -> tuple[list[list[str]], Tensor, list[str]]:
    """(training captions [N][V]: V versions of each, P(each version) [V], held-out captions).

    Shapes: the scenes of the training seed (the same captions as a diffusion run of that seed),
    each in its KEEPS variants with caption dropout; held out, full captions of another seed.
    A folder: its captions, the last tenth (at most textlm.eval_count) held out."""
    d, n_held = cfg.data, cfg.textlm.eval_count
    if d.name == "shapes":
        gone = excluded(withhold=d.withhold)
        scenes = random_scenes(min(d.count, d.limit or d.count), cfg.train.seed, d.max_objects,
                               gone)
        held = random_scenes(n_held, cfg.train.seed + HELD_OUT_SEED, d.max_objects, gone)
        if d.caption_dropout > 0:
            return ([caption_variants(s) for s in scenes], variant_probs(d.caption_dropout),
                    [caption(s) for s in held])
        return [[caption(s)] for s in scenes], torch.ones(1), [caption(s) for s in held]
    captions = folder_pairs(d.path, d.size).captions
    n = min(n_held, max(1, len(captions) // 10))
    return [[text] for text in captions[:-n]], torch.ones(1), captions[-n:]


@torch.no_grad()
def masked_scores(model: TextLM, ids: Tensor, mask: Tensor, generator: torch.Generator
                  ) -> dict[str, float]:
    """Held-out captions (ids, mask [N, L]) corrupted as in training: the share of hidden
    tokens the model names (`masked_accuracy`), their mean cross-entropy (`masked_loss`), and
    the share that the most frequent hidden token makes up (`unigram_accuracy`: the best
    constant guess, chosen in hindsight, which a model that reads the context must beat)."""
    correct, nll, targets = 0, 0.0, []
    for i in range(0, len(ids), EVAL_BATCH):
        logits, target = model.mlm_logits(*trim(ids[i:i + EVAL_BATCH], mask[i:i + EVAL_BATCH]),
                                          generator)  # [M, V], [M]
        correct += int((logits.argmax(dim=-1) == target).sum())
        nll += float(F.cross_entropy(logits.float(), target, reduction="sum"))
        targets.append(target)
    hidden = torch.cat(targets)
    return {"masked_accuracy": correct / len(hidden), "masked_loss": nll / len(hidden),
            "unigram_accuracy": int(torch.bincount(hidden).max()) / len(hidden)}


class TextLMKind(Kind):
    label = "textlm"
    sections = ("data", "textlm")

    def setup(self) -> None:
        config, device = self.config, self.device
        variants, keep_prob, held = textlm_captions(config)
        c = config.textlm
        # [N, V, L]: V versions of each caption, one drawn per step (V = 1 without dropout)
        self.tok, self.ids, self.mask = tokenize_variants(variants, c.vocab_size,
                                                          c.context_length, device)
        self.keep_prob = keep_prob.to(device)
        self.held = tuple(t.to(device) for t in self.tok.batch(held, c.context_length))
        self.size = len(variants)

    def make_model(self) -> nn.Module:
        c = self.config.textlm
        self.model = TextLM(TextLMModelConfig(
            vocab_size=self.tok.vocab_size, context_length=c.context_length, width=c.width,
            layers=c.layers, heads=c.heads), mask_prob=c.mask_prob).to(self.device)
        return self.model

    # the same split as the CLIP's text tower, whose parameter names these share (text.position):
    # no weight decay on gains, biases or the position embedding
    param_groups = ClipKind.param_groups

    def batch(self, idx: Tensor, gen: torch.Generator) -> tuple[Tensor, Tensor]:
        i = idx.to(self.device)
        v = torch.multinomial(self.keep_prob, len(i), replacement=True, generator=gen)
        return trim(self.ids[i, v], self.mask[i, v])  # padding no caption reaches: cut

    def loss(self, forward: nn.Module, batch: tuple[Tensor, Tensor],
             gen: torch.Generator) -> tuple[Tensor, dict[str, float]]:
        return forward(*batch, gen), {}

    def finish(self, step: int, weights: dict[str, Tensor]) -> None:
        """Score the final weights on the held-out captions (their masks drawn from a fixed
        seed, the same for every run of the recipe); save them with the tokenizer."""
        self.model.load_state_dict(weights)
        losses = [r["loss"] for r in read_log(self.run_dir / LOG)]
        metrics = {"steps": step}
        if losses:
            metrics |= {"loss_first": losses[0], "loss_last": float(np.mean(losses[-10:]))}
        gen = torch.Generator(self.device).manual_seed(self.config.train.seed + HELD_OUT_SEED)
        metrics |= masked_scores(self.model, *self.held, gen)
        save_textlm(self.run_dir, self.model, self.tok, self.config, metrics)
