"""Train a small CLIP on image-caption pairs, save it, load it, and measure what it learned.

    result = train_clip({"steps": 2000, "size": 32}, "runs/clip")
    model, tokenizer = load_clip("runs/clip")

Pairs come from the built-in `shapes` dataset (its captions) or from a folder holding
`captions.csv` (header `path,caption`) or `captions.jsonl` (`{"path": ..., "caption": ...}` per
line), paths relative to the folder. A run dir holds `clip.safetensors` (weights) and `clip.json`
(training config, architecture, tokenizer merges and word list, metrics), both written atomically.

The evaluation is CLIP's own: zero-shot classification (embed one prompt per class, pick the
nearest) of the shapes' kinds and colours, and text->image / image->text retrieval recall@1/5 on
held-out pairs that training never saw, plus a picture of the similarity matrix.
"""

from __future__ import annotations

import contextlib
import csv
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from inkfuse.clip.tokenizer import BPETokenizer
from inkfuse.config import bounded, build_section, choice, listed
from inkfuse.errors import CheckpointError, ConfigError, DataError, TrainingError
from inkfuse.io import atomic_path
from inkfuse.nn.clip import CLIP, ClipModelConfig
from inkfuse.train.checkpoint import (
    check_weights,
    load_tensors,
    read_json,
    save_tensors,
    write_json,
)
from inkfuse.train.trainer import warmup_cosine

FORMAT = "inkfuse-clip-1"
WEIGHTS, META = "clip.safetensors", "clip.json"


@dataclass
class ClipConfig:
    data: str = choice("shapes", "shapes", "folder")
    path: str = field(default="", metadata={"doc": "folder with captions.csv/.jsonl (folder)"})
    size: int = bounded(32, 8, 512, doc="images are resized to size x size")
    count: int = bounded(20000, 16, 10_000_000, doc="training pairs to generate (shapes)")
    max_objects: int = bounded(1, 1, 2, doc="objects per image (shapes)")
    caption_dropout: float = bounded(
        0.5, 0.0, 1.0, doc="shapes: drop size, colour, position from a training caption, each "
                           "with this probability, so short prompts ('a red circle') work too")
    eval_count: int = bounded(512, 16, 100_000, doc="held-out pairs for retrieval")
    vocab_size: int = bounded(512, 259, 100_000, doc="BPE vocabulary incl. 256 bytes + 3 specials")
    context_length: int = bounded(32, 4, 1024, doc="tokens per prompt, incl. <sot> and <eot>")
    channels: list[int] = listed([32, 64, 128], doc="image CNN stage widths")
    width: int = bounded(128, 8, 4096, doc="text transformer width")
    layers: int = bounded(3, 1, 48)
    heads: int = bounded(4, 1, 64)
    embed_dim: int = bounded(128, 2, 4096, doc="shared embedding width")
    steps: int = bounded(2000, 1, None)
    batch_size: int = bounded(128, 2, 65536, doc="pairs per step; each is the others' negative")
    lr: float = bounded(1e-3, 0.0, 1.0)
    weight_decay: float = bounded(0.1, 0.0, 10.0)
    warmup_steps: int = bounded(100, 0, None)
    precision: str = choice("fp32", "fp32", "bf16")
    device: str = field(default="auto", metadata={"doc": "auto, cpu, cuda, cuda:1, ..."})
    seed: int = bounded(0, 0, None)
    templates: list[str] = listed(["a {}", "a photo of a {}"],
                                  doc="zero-shot prompts, averaged (CLIP's prompt ensembling)")


def clip_config(raw: ClipConfig | dict[str, Any]) -> ClipConfig:
    """A validated ClipConfig from a dict (keys as the fields) or one already built."""
    values = asdict(raw) if isinstance(raw, ClipConfig) else dict(raw)
    cfg = build_section(ClipConfig, values, "clip", "the clip settings")
    if cfg.width % cfg.heads:
        raise ConfigError(f"clip.width = {cfg.width} is not divisible by clip.heads = "
                          f"{cfg.heads}; pick a width that is a multiple of the head count")
    if cfg.data == "folder" and not cfg.path:
        raise ConfigError("clip.data = 'folder' needs clip.path: a folder with captions.csv")
    if any("{}" not in t for t in cfg.templates):
        raise ConfigError("every clip.templates entry needs a {} for the class name")
    return cfg


# ----------------------------------------------------------------------------- data


@dataclass
class Pairs:
    """Images (uint8 [N, C, S, S]) with one caption each, and for shapes the scenes they show."""

    images: torch.Tensor
    captions: list[str]
    scenes: list | None = None


def shapes_pairs(count: int, size: int, seed: int, max_objects: int) -> Pairs:
    from inkfuse.data.shapes import caption, generate_shapes

    images, scenes = generate_shapes(count, size, seed, max_objects)
    return Pairs(images, [caption(s) for s in scenes], scenes)


def folder_pairs(path: str | Path, size: int) -> Pairs:
    """Read `captions.csv` or `captions.jsonl` in `path`; every listed image, resized."""
    from inkfuse.data.folder import load_image

    root = Path(path)
    rows: list[tuple[str, str]] = []
    if (root / "captions.csv").is_file():
        with open(root / "captions.csv", newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            if not {"path", "caption"} <= set(reader.fieldnames or []):
                raise DataError(f"{root / 'captions.csv'} needs a header line 'path,caption'")
            rows = [(r["path"], r["caption"]) for r in reader]
    elif (root / "captions.jsonl").is_file():
        lines = (root / "captions.jsonl").read_text(encoding="utf-8").splitlines()
        for n, line in enumerate(lines, 1):
            if line.strip():
                try:
                    item = json.loads(line)
                    rows.append((item["path"], item["caption"]))
                except (json.JSONDecodeError, KeyError, TypeError):
                    raise DataError(f"{root / 'captions.jsonl'} line {n} is not "
                                    '{"path": ..., "caption": ...}') from None
    else:
        raise DataError(f"{root} has no captions.csv or captions.jsonl: add one with lines "
                        "'path,caption'")
    if len(rows) < 2:
        raise DataError(f"{root} lists {len(rows)} captioned images; CLIP needs at least 2")
    images = torch.stack([load_image(root / p, size) for p, _ in rows])
    return Pairs(images, [c for _, c in rows])


def _to_float(images: torch.Tensor) -> torch.Tensor:
    return images.float().div(127.5).sub(1.0)


# ----------------------------------------------------------------------------- training


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def train_clip(config: ClipConfig | dict[str, Any], out_dir: str | Path, *,
               progress: bool = True) -> dict[str, Any]:
    """Train from scratch, save to `out_dir`, evaluate; returns the metrics (also in clip.json).

    Deterministic for a seed on one device: the model init, the batch order and the data all
    derive from `config.seed`.
    """
    cfg = clip_config(config)
    out = Path(out_dir)
    device = _device(cfg.device)
    torch.manual_seed(cfg.seed)
    if cfg.data == "shapes":
        train = shapes_pairs(cfg.count, cfg.size, cfg.seed, cfg.max_objects)
        held = shapes_pairs(cfg.eval_count, cfg.size, cfg.seed + 1_000_003, cfg.max_objects)
    else:
        pairs = folder_pairs(cfg.path, cfg.size)
        n_held = min(cfg.eval_count, max(1, len(pairs.captions) // 10))
        train = Pairs(pairs.images[:-n_held], pairs.captions[:-n_held])
        held = Pairs(pairs.images[-n_held:], pairs.captions[-n_held:])

    # [N, V, L]: V versions of each caption, one drawn per step (V = 1 without dropout)
    variants = [[c] for c in train.captions]
    keep_prob = torch.ones(1)
    if train.scenes is not None and cfg.caption_dropout > 0:
        from inkfuse.data.shapes import caption_variants, variant_probs

        variants = [caption_variants(s) for s in train.scenes]
        keep_prob = variant_probs(cfg.caption_dropout)
    tok = BPETokenizer.train([c for vs in variants for c in vs], cfg.vocab_size)
    flat_ids, flat_mask = tok.batch([c for vs in variants for c in vs], cfg.context_length)
    ids = flat_ids.view(len(variants), len(variants[0]), -1)
    mask = flat_mask.view(len(variants), len(variants[0]), -1)
    mcfg = ClipModelConfig(
        image_size=cfg.size, in_channels=train.images.shape[1], channels=cfg.channels,
        vocab_size=tok.vocab_size, context_length=cfg.context_length, width=cfg.width,
        layers=cfg.layers, heads=cfg.heads, embed_dim=cfg.embed_dim)
    model = CLIP(mcfg).to(device)
    # no weight decay on gains, biases, embeddings' scale or the temperature (as in CLIP)
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and n != "text.position"]
    rest = [p for n, p in model.named_parameters() if p.ndim < 2 or n == "text.position"]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                             {"params": rest, "weight_decay": 0.0}], lr=cfg.lr)

    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda step: warmup_cosine(step, cfg.steps, cfg.warmup_steps))
    gen = torch.Generator().manual_seed(cfg.seed)
    images_dev, ids, mask = train.images.to(device), ids.to(device), mask.to(device)
    n, bs = len(train.captions), min(cfg.batch_size, len(train.captions))
    order, pos = torch.randperm(n, generator=gen), 0
    autocast = (torch.autocast(device.type, dtype=torch.bfloat16) if cfg.precision == "bf16"
                else contextlib.nullcontext())
    losses: list[float] = []
    bar = _progress(cfg.steps, progress)
    model.train()
    for step in range(cfg.steps):
        if pos + bs > n:  # a new epoch: reshuffle
            order, pos = torch.randperm(n, generator=gen), 0
        idx = order[pos: pos + bs].to(device)
        pos += bs
        v = torch.multinomial(keep_prob, bs, replacement=True, generator=gen).to(device)
        with autocast:
            loss = model(_to_float(images_dev[idx]), ids[idx, v], mask[idx, v])
        if not torch.isfinite(loss):
            raise TrainingError(f"the loss became {loss.item()} at step {step}; lower clip.lr "
                                "or use precision = 'fp32'")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        losses.append(loss.item())
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{losses[-1]:.3f}")
    if bar is not None:
        bar.close()
    model.eval()

    metrics: dict[str, Any] = {"steps": cfg.steps, "loss_first": losses[0],
                               "loss_last": float(np.mean(losses[-10:]))}
    metrics |= evaluate_clip(model, tok, cfg, held, out / "similarity.png")
    save_clip(out, model, tok, cfg, metrics)
    write_json(out / "losses.json", losses)
    return metrics


def _progress(total: int, enabled: bool) -> Any:
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="clip", unit="step")


# ----------------------------------------------------------------------------- save / load


def save_clip(out_dir: Path, model: CLIP, tok: BPETokenizer, cfg: ClipConfig,
              metrics: dict[str, Any]) -> None:
    """Weights first, then the JSON that describes them; each file is replaced atomically."""
    out_dir.mkdir(parents=True, exist_ok=True)
    with atomic_path(out_dir / WEIGHTS) as tmp:
        save_tensors(tmp, model.state_dict(), kind="clip")
    write_json(out_dir / META, {"format": FORMAT, "model": asdict(model.cfg),
                                "train": asdict(cfg), "tokenizer": tok.to_dict(),
                                "metrics": metrics})


def load_clip(run_dir: str | Path, device: str | torch.device = "cpu"
              ) -> tuple[CLIP, BPETokenizer, dict[str, Any]]:
    """(model in eval mode, tokenizer, the whole clip.json) of a run dir from `train_clip`, or of
    a pretrained model named `open_clip:MODEL:WEIGHTS` (see `inkfuse.clip.pretrained`; its model
    and tokenizer have the same methods).

    Every tensor is checked against the architecture in clip.json, so weights of another model
    give a CheckpointError naming the first mismatch rather than a shape error deep in torch.
    """
    from inkfuse.clip.pretrained import is_open_clip_spec, load_open_clip_spec

    if is_open_clip_spec(run_dir):
        return load_open_clip_spec(str(run_dir), device)
    run = Path(run_dir)
    meta = read_json(run / META)
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CheckpointError(f"{run / META} is not an inkfuse CLIP (no '{FORMAT}' tag); "
                              "train one with `inkfuse clip train`")
    try:
        mcfg = ClipModelConfig(**meta["model"])
        model = CLIP(mcfg)
    except (KeyError, TypeError, ValueError, RuntimeError) as e:
        raise CheckpointError(f"{run / META} has a broken model section ({e}); "
                              "train the model again") from None
    tok = BPETokenizer.from_dict(meta.get("tokenizer"), f"{run / META} tokenizer")
    if tok.vocab_size != mcfg.vocab_size:
        raise CheckpointError(f"{run / META}: the tokenizer has {tok.vocab_size} tokens but the "
                              f"model {mcfg.vocab_size}; the run dir is mixed up, train again")
    weights = load_tensors(run / WEIGHTS)
    check_weights(weights, model.state_dict(), run / WEIGHTS, META)
    model.load_state_dict(weights)
    return model.to(device).eval(), tok, meta


# ----------------------------------------------------------------------------- evaluation


@torch.no_grad()
def embed_images(model: CLIP, images: torch.Tensor, batch: int = 256) -> torch.Tensor:
    """uint8 [N, C, S, S] -> unit vectors [N, D] on the CPU."""
    device = next(model.parameters()).device
    return torch.cat([model.encode_image(_to_float(images[i: i + batch].to(device))).cpu()
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
    if cfg.data == "shapes":
        from inkfuse.data.shapes import COLOURS, SHAPES, generate_shapes

        images, scenes = generate_shapes(cfg.eval_count, cfg.size, cfg.seed + 2_000_003, 1)
        kinds = torch.tensor([SHAPES.index(s[0].kind) for s in scenes])
        colours = torch.tensor([list(COLOURS).index(s[0].colour) for s in scenes])
        metrics["zero_shot_kind"] = zero_shot(model, tok, images, kinds, list(SHAPES),
                                              cfg.templates)
        metrics["zero_shot_colour"] = zero_shot(model, tok, images, colours, list(COLOURS),
                                                cfg.templates)
    img = embed_images(model, held.images)
    txt = embed_texts(model, tok, held.captions)
    sim = txt @ img.T  # [text, image]
    caps = np.array(held.captions)
    same = torch.from_numpy(caps[:, None] == caps[None, :])
    t2i, i2t = recall_at(sim, same), recall_at(sim.T, same)
    metrics |= {"text_to_image_r1": t2i[1], "text_to_image_r5": t2i[5],
                "image_to_text_r1": i2t[1], "image_to_text_r5": i2t[5],
                "eval_pairs": len(held.captions)}
    if heatmap is not None:
        k = min(8, len(held.captions))
        similarity_heatmap(img[:k], txt[:k], [f"image {i}" for i in range(k)],
                           held.captions[:k], heatmap)
    return metrics


def similarity_heatmap(img: torch.Tensor, txt: torch.Tensor, image_labels: list[str],
                       texts: list[str], path: str | Path) -> np.ndarray:
    """Write the image x text cosine-similarity matrix as a PNG; returns the matrix."""
    from inkfuse.viz import plot_heatmap

    matrix = (img @ txt.T).numpy()
    plot_heatmap(matrix, image_labels, texts, path, "CLIP cosine similarity (image x text)")
    return matrix
