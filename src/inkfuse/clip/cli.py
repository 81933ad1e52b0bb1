"""`inkfuse clip`: train a small CLIP, score it, and draw its image x text similarities.

    inkfuse clip train --out runs/clip --steps 2000 --size 32
    inkfuse clip score runs/clip                      # zero-shot accuracy, recall@1/5 -> JSON
    inkfuse clip similarity runs/clip --image a.png --image b.png \\
        --text "a red circle" --text "a blue square" --out heat.png
    inkfuse clip similarity open_clip:ViT-B-32:openai --image a.png --text "a cat" --out heat.png

The main CLI registers it with `add_clip_parser(subparsers)` and prints any InkfuseError.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from inkfuse.clip.tokenizer import check_prompt
from inkfuse.errors import ConfigError


def add_clip_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register `clip` (with train / score / similarity) on an argparse subparsers object."""
    cl = subparsers.add_parser("clip", help="train and inspect a text-image model (CLIP)")
    sub = cl.add_subparsers(dest="clip_command", required=True)

    tr = sub.add_parser("train", help="train a CLIP on shapes captions or a captioned folder")
    tr.add_argument("--out", default="runs/clip", help="run dir (default runs/clip)")
    tr.add_argument("--steps", type=int, default=None, help="default 2000")
    tr.add_argument("--size", type=int, default=None, help="image size (default 32)")
    tr.add_argument("--seed", type=int, default=None)
    tr.add_argument("--folder", default=None,
                    help="train on this folder's captions.csv/.jsonl instead of shapes")
    tr.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="any training setting, e.g. --set batch_size=256 --set lr=5e-4")
    tr.add_argument("--quiet", action="store_true", help="no progress bar")
    tr.set_defaults(fn=cmd_train)

    sc = sub.add_parser("score", help="zero-shot accuracy and retrieval recall@1/5")
    sc.add_argument("run_dir")
    sc.add_argument("--out", default=None, help="JSON file (default RUN/score.json)")
    sc.set_defaults(fn=cmd_score)

    si = sub.add_parser("similarity", help="heat-map of image x text cosine similarities")
    si.add_argument("run_dir", help="a CLIP run dir, or a pretrained open_clip:MODEL:WEIGHTS "
                                     "(WEIGHTS: a file or a cached tag, e.g. openai)")
    si.add_argument("--image", action="append", required=True, help="an image file (repeat)")
    si.add_argument("--text", action="append", required=True, help="a prompt (repeat)")
    si.add_argument("--out", required=True, help=".png to write")
    si.set_defaults(fn=cmd_similarity)
    return cl


def _parse_set(items: list[str]) -> dict[str, Any]:
    from inkfuse.config import parse_override

    out: dict[str, Any] = {}
    for item in items:  # "lr=5e-4" or "clip.lr=5e-4"; values read as TOML
        keys, value = parse_override(item if "." in item.split("=")[0] else f"clip.{item}")
        if keys[0] != "clip":
            raise ConfigError(f"--set {item!r}: clip settings have no section, e.g. lr=5e-4")
        out[keys[1]] = value
    return out


def cmd_train(args: argparse.Namespace) -> None:
    from inkfuse.clip.train import train_clip

    raw = _parse_set(args.set)
    for key in ("steps", "size", "seed"):
        if getattr(args, key) is not None:
            raw[key] = getattr(args, key)
    if args.folder:
        raw |= {"data": "folder", "path": args.folder}
    metrics = train_clip(raw, args.out, progress=not args.quiet)
    print(format_metrics(metrics))
    print(f"saved to {args.out} (clip.safetensors, clip.json, similarity.png)")


def format_metrics(metrics: dict[str, Any]) -> str:
    names = ("loss_last", "zero_shot_kind", "zero_shot_colour", "text_to_image_r1",
             "text_to_image_r5", "image_to_text_r1", "image_to_text_r5")
    rows = [(k, metrics[k]) for k in names if k in metrics]
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v:.4f}" for k, v in rows)


def cmd_score(args: argparse.Namespace) -> None:
    from inkfuse.clip.pretrained import is_open_clip_spec
    from inkfuse.clip.train import (
        Pairs,
        clip_config,
        evaluate_clip,
        folder_pairs,
        load_clip,
        shapes_pairs,
    )
    from inkfuse.train.checkpoint import write_json

    if is_open_clip_spec(args.run_dir):
        raise ConfigError(f"clip score evaluates an inkfuse CLIP run on the data it was trained "
                          f"on, which {args.run_dir} has none of; compare it with images and "
                          "prompts of yours: inkfuse clip similarity")
    model, tok, meta = load_clip(args.run_dir)
    cfg = clip_config(meta["train"])
    if cfg.data == "shapes":
        held = shapes_pairs(cfg.eval_count, cfg.size, cfg.seed + 1_000_003, cfg.max_objects)
    else:
        pairs = folder_pairs(cfg.path, cfg.size)
        n = min(cfg.eval_count, max(1, len(pairs.captions) // 10))
        held = Pairs(pairs.images[-n:], pairs.captions[-n:])
    metrics = evaluate_clip(model, tok, cfg, held)
    print(format_metrics(metrics))
    out = Path(args.out) if args.out else Path(args.run_dir) / "score.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    write_json(out, metrics)
    print(f"wrote {out}")


def cmd_similarity(args: argparse.Namespace) -> None:
    import torch

    from inkfuse.clip.train import embed_images, embed_texts, load_clip, similarity_heatmap
    from inkfuse.data.folder import load_image

    model, tok, _ = load_clip(args.run_dir)
    for text in args.text:
        check_prompt(tok, text)
    images = torch.stack([load_image(p, model.cfg.image_size, model.cfg.in_channels)
                          for p in args.image])
    matrix = similarity_heatmap(embed_images(model, images), embed_texts(model, tok, args.text),
                                [Path(p).name for p in args.image], args.text, args.out)
    print(json.dumps({"images": args.image, "texts": args.text,
                      "similarity": matrix.round(4).tolist()}))
    print(f"wrote {args.out}")
