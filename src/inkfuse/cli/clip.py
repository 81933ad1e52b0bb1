"""`inkfuse clip`: train a small CLIP, score it, and draw its image x text similarities.

    inkfuse clip train clip-shapes --out runs/clip --set train.steps=2000 --set data.size=32
    inkfuse clip train --out runs/clip --steps 2000 --size 32       # the same, by shorthands
    inkfuse clip score runs/clip                      # zero-shot accuracy, recall@1/5 -> JSON
    inkfuse clip similarity runs/clip --image a.png --image b.png \\
        --text "a red circle" --text "a blue square" --out heat.png
    inkfuse clip similarity open_clip:ViT-B-32:openai --image a.png --text "a cat" --out heat.png
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from inkfuse.cli.args import (
    SEED_MAX,
    add_train_args,
    add_trust_arg,
    existing_run,
    number,
    out_path,
    overrides,
    read_images,
    run_dir,
)
from inkfuse.errors import ConfigError
from inkfuse.lazy import lazy_names

# tests/clip/test_clip_train.py imports check_prompt from here; the tokenizer imports torch,
# which building the parser must not
__getattr__ = lazy_names(__name__, {"check_prompt": "inkfuse.text.tokenizer"})


def add_parser(subparsers: Any) -> None:
    """Register `clip` (with train / score / similarity) on the main parser's subparsers."""
    cl = subparsers.add_parser("clip", help="train and inspect a text-image model (CLIP)")
    sub = cl.add_subparsers(dest="clip_command", required=True)

    tr = sub.add_parser("train", help="train (or resume) a CLIP from a recipe: shapes captions "
                        "or a captioned folder")
    add_train_args(tr, "CLIP recipe", default="clip-shapes")
    # shorthands, and the spellings from before clip train took a recipe (see _old_spellings)
    for flag, key, lo, hi in (("--steps", "train.steps", 1, None),
                              ("--size", "data.size", 1, 4096),
                              ("--seed", "train.seed", 0, SEED_MAX)):
        tr.add_argument(flag, action=number(int, lo=lo, most=hi), default=None,
                        help=f"shorthand for --set {key}=N")
    tr.add_argument("--folder", default=None, help="train on this folder's captions.csv/.jsonl "
                    "instead of shapes (shorthand for --set data.name=folder data.path=...)")
    tr.set_defaults(fn=cmd_train)

    sc = sub.add_parser("score", help="zero-shot accuracy and retrieval recall@1/5")
    sc.add_argument("run_dir")
    sc.add_argument("--out", default=None, help="JSON file (default RUN/score.json)")
    sc.set_defaults(fn=cmd_score)

    si = sub.add_parser("similarity", help="heat-map of image x text cosine similarities")
    si.add_argument("run_dir", help="a CLIP run dir, or a pretrained open_clip:MODEL:WEIGHTS "
                                     "(WEIGHTS: a file or a cached tag, e.g. openai)")
    si.add_argument("--image", action="append", required=True,
                    help="an image file, one heat-map row (repeat)")
    si.add_argument("--text", action="append", required=True, help="a prompt (repeat)")
    si.add_argument("--out", required=True, help=".png to write")
    add_trust_arg(si, "open_clip weights")
    si.set_defaults(fn=cmd_similarity)


add_clip_parser = add_parser  # the name tests/clip/test_clip_train.py imports


def _old_spellings(args: argparse.Namespace) -> list[str]:
    """The --set list, with `--set lr=5e-4` (a key without its section, as clip train took them
    before it read recipes) given its section, then the shorthands, which win over --set."""
    from inkfuse.artifacts.clip import _FLAT as FLAT_KEYS  # old flat key -> "section.key"

    sets = []
    for item in args.set:
        key, eq, value = item.partition("=")
        if eq and "." not in key:
            key = FLAT_KEYS.get(key.strip(), f"clip.{key.strip()}")
        sets.append(f"{key}{eq}{value}")
    given = {"train.steps": args.steps, "data.size": args.size, "train.seed": args.seed}
    if args.folder:  # as TOML strings, so that a folder named 2024 stays a string
        given |= {"data.name": '"folder"', "data.path": json.dumps(args.folder)}
    return sets + [f"{key}={value}" for key, value in given.items() if value is not None]


def cmd_train(args: argparse.Namespace) -> None:
    from inkfuse.artifacts.checkpoint import read_json
    from inkfuse.config import load_recipe
    from inkfuse.train import train

    config = load_recipe(args.recipe, overrides(args, _old_spellings(args)), kind="clip")
    out = train(config, run_dir(args), progress=not args.quiet)
    print(format_metrics(read_json(out / "clip.json")["metrics"]))
    print(f"saved to {out} (clip.safetensors, clip.json, similarity.png)")


def format_metrics(metrics: dict[str, Any]) -> str:
    """The headline numbers of a CLIP, one per line, aligned."""
    names = ("loss_last", "zero_shot_kind", "zero_shot_colour", "text_to_image_r1",
             "text_to_image_r5", "image_to_text_r1", "image_to_text_r5", "neg_one_all",
             "neg_two_colour", "neg_two_size", "neg_two_kind", "neg_two_relation", "neg_two_all")
    rows = [(k, metrics[k]) for k in names if k in metrics]
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v:.4f}" for k, v in rows)


def cmd_score(args: argparse.Namespace) -> None:
    from inkfuse.artifacts.checkpoint import write_json
    from inkfuse.artifacts.clip import clip_recipe, load_clip
    from inkfuse.artifacts.open_clip import is_open_clip_spec
    from inkfuse.metrics.clip import evaluate_clip
    from inkfuse.train.clip import clip_pairs

    if is_open_clip_spec(args.run_dir):
        raise ConfigError(f"clip score evaluates an inkfuse CLIP run on the data it was trained "
                          f"on, which {args.run_dir} has none of; compare it with images and "
                          "prompts of yours: inkfuse clip similarity")
    out = out_path(args.out or Path(args.run_dir) / "score.json", ".json")
    model, tok, meta = load_clip(existing_run(args.run_dir, "CLIP run dir"))
    cfg = clip_recipe(meta)
    _, held = clip_pairs(cfg)  # the held-out pairs of training
    metrics = evaluate_clip(model, tok, cfg, held)
    print(format_metrics(metrics))
    write_json(out, metrics)
    print(f"wrote {out}")


def cmd_similarity(args: argparse.Namespace) -> None:
    from inkfuse.artifacts.clip import load_clip
    from inkfuse.metrics.clip import embed_images, embed_texts, similarity_heatmap
    from inkfuse.text.tokenizer import check_prompt

    out = out_path(args.out, ".png")
    model, tok, _ = load_clip(existing_run(args.run_dir, "CLIP run dir"),
                              trust=args.trust_weights)
    for text in args.text:
        check_prompt(tok, text)
    images = read_images(args.image, model.cfg.image_size, model.cfg.in_channels)
    if len(images) != len(args.image):
        raise ConfigError("clip similarity labels each row with its file: give image files to "
                          "--image, not folders or .npz files")
    matrix = similarity_heatmap(embed_images(model, images), embed_texts(model, tok, args.text),
                                [Path(p).name for p in args.image], args.text, out)
    print(json.dumps({"images": args.image, "texts": args.text,
                      "similarity": matrix.round(4).tolist()}))
    print(f"wrote {out}")
