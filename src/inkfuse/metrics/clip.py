"""What a CLIP learned, measured as CLIP measures it: zero-shot classification (embed one prompt
per class, pick the nearest) of the shapes' kinds and colours, text->image / image->text retrieval
recall@1/5 on held-out pairs that training never saw, and a picture of the similarity matrix.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from inkfuse.config import ClipConfig
from inkfuse.data.captions import Pairs, to_float
from inkfuse.data.shapes import COLOURS, SHAPES, caption, generate_shapes, hard_negatives
from inkfuse.nn.clip import CLIP
from inkfuse.text.tokenizer import BPETokenizer
from inkfuse.viz import plot_heatmap


@torch.no_grad()
def embed_images(model: CLIP, images: torch.Tensor, batch: int = 256) -> torch.Tensor:
    """uint8 [N, C, S, S] -> unit vectors [N, D] on the CPU."""
    device = next(model.parameters()).device
    return torch.cat([model.encode_image(to_float(images[i: i + batch].to(device))).cpu()
                      for i in range(0, len(images), batch)])


@torch.no_grad()
def embed_texts(model: CLIP, tok: BPETokenizer, texts: list[str], batch: int = 256
                ) -> torch.Tensor:
    """Prompts -> unit vectors [N, D] on the CPU."""
    device = next(model.parameters()).device
    out = []
    for i in range(0, len(texts), batch):
        ids, mask = tok.batch(texts[i: i + batch], model.cfg.context_length)
        out.append(model.encode_text(ids.to(device), mask.to(device)).cpu())
    return torch.cat(out)


def zero_shot(model: CLIP, tok: BPETokenizer, images: torch.Tensor, labels: torch.Tensor,
              class_names: list[str], templates: list[str]) -> float:
    """Accuracy of picking, for each image, the class whose prompts it is most similar to.

    Each class's text embedding is the normalised mean over `templates` (CLIP's ensembling)."""
    emb = torch.stack([embed_texts(model, tok, [t.format(c) for t in templates]).mean(0)
                       for c in class_names])
    emb = torch.nn.functional.normalize(emb, dim=-1)
    pred = (embed_images(model, images) @ emb.T).argmax(1)
    return (pred == labels).float().mean().item()


def recall_at(sim: torch.Tensor, relevant: torch.Tensor, ks: tuple[int, ...] = (1, 5)
              ) -> dict[int, float]:
    """Fraction of queries (rows of `sim`) with a relevant item among their top k.

    `relevant[i, j]` is True when item j counts as a right answer for query i; with captions
    that repeat, every image with the query's caption counts."""
    top = sim.topk(min(max(ks), sim.shape[1]), dim=1).indices  # k > items: all are in the top
    hits = relevant.gather(1, top)
    return {k: hits[:, :k].any(1).float().mean().item() for k in ks}


def evaluate_clip(model: CLIP, tok: BPETokenizer, cfg: ClipConfig, held: Pairs,
                  heatmap: Path | None = None) -> dict[str, Any]:
    """Zero-shot accuracy (shapes only) and retrieval recall@1/5 on `held`; optionally a
    similarity heat-map of its first 8 pairs."""
    model.eval()
    metrics: dict[str, Any] = {}
    if cfg.data.name == "shapes":
        images, scenes = generate_shapes(cfg.clip.eval_count, cfg.data.size,
                                         cfg.train.seed + 2_000_003, 1,
                                         withhold=cfg.data.withhold)
        kinds = torch.tensor([SHAPES.index(s[0].kind) for s in scenes])
        colours = torch.tensor([list(COLOURS).index(s[0].colour) for s in scenes])
        metrics["zero_shot_kind"] = zero_shot(model, tok, images, kinds, list(SHAPES),
                                              cfg.clip.templates)
        metrics["zero_shot_colour"] = zero_shot(model, tok, images, colours, list(COLOURS),
                                                cfg.clip.templates)
    img = embed_images(model, held.images)
    txt = embed_texts(model, tok, held.captions)
    sim = txt @ img.T  # [text, image]
    caps = np.array(held.captions)
    same = torch.from_numpy(caps[:, None] == caps[None, :])
    t2i, i2t = recall_at(sim, same), recall_at(sim.T, same)
    metrics |= {"text_to_image_r1": t2i[1], "text_to_image_r5": t2i[5],
                "image_to_text_r1": i2t[1], "image_to_text_r5": i2t[5],
                "eval_pairs": len(held.captions)}
    if held.scenes is not None:
        metrics |= hard_negative_accuracy(model, tok, img, held.scenes)
    if heatmap is not None:
        k = min(8, len(held.captions))
        similarity_heatmap(img[:k], txt[:k], [f"image {i}" for i in range(k)],
                           held.captions[:k], heatmap)
    return metrics


def hard_negative_accuracy(model: CLIP, tok: BPETokenizer, img: torch.Tensor, scenes: list
                           ) -> dict[str, float]:
    """How often each held-out image is closer to its own caption than to the same words bound
    differently (`shapes.hard_negatives`; ARO's test, Yuksekgonul et al. 2023): per change
    ("neg_two_colour": the two objects' colours swapped, ... "neg_one_position") and all of an
    image's at once ("neg_two_all", "neg_one_all"). A bag-of-words text tower scores 0.5 on the
    two-object swaps, whatever its retrieval recall."""
    negatives = [hard_negatives(s) for s in scenes]
    counts = torch.tensor([len(found) for found in negatives])
    own = (img * embed_texts(model, tok, [caption(s) for s in scenes])).sum(1)  # [N] cosines
    flat = [text for found in negatives for text in found.values()]
    other = (img.repeat_interleave(counts, 0) * embed_texts(model, tok, flat)).sum(1)
    beaten = iter((own.repeat_interleave(counts) > other).tolist())  # one per negative
    wins: dict[str, list[bool]] = {}
    for scene, found in zip(scenes, negatives, strict=True):
        group = "one" if len(scene) == 1 else "two"
        right = {name: next(beaten) for name in found}
        for name, ok in right.items():
            wins.setdefault(f"neg_{group}_{name}", []).append(ok)
        wins.setdefault(f"neg_{group}_all", []).append(all(right.values()))
    return {name: float(np.mean(v)) for name, v in sorted(wins.items())}


def similarity_heatmap(img: torch.Tensor, txt: torch.Tensor, image_labels: list[str],
                       texts: list[str], path: str | Path) -> np.ndarray:
    """Write the image x text cosine-similarity matrix as a PNG; returns the matrix."""
    matrix = (img @ txt.T).numpy()
    plot_heatmap(matrix, image_labels, texts, path, "CLIP cosine similarity (image x text)")
    return matrix
