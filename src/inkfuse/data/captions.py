"""Image-caption pairs for contrastive text encoders: the built-in shapes with their captions, or
a folder with `captions.csv` (header `path,caption`) or `captions.jsonl`
(`{"path": ..., "caption": ...}` per line), paths relative to the folder.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path

import torch

from inkfuse.data.folder import load_image
from inkfuse.data.shapes import caption, generate_shapes
from inkfuse.errors import DataError


@dataclass
class Pairs:
    """Images (uint8 [N, C, S, S]) with one caption each, and for shapes the scenes they show."""

    images: torch.Tensor
    captions: list[str]
    scenes: list | None = None


def shapes_pairs(count: int, size: int, seed: int, max_objects: int,
                 withhold: tuple[str, ...] | list[str] = ()) -> Pairs:
    images, scenes = generate_shapes(count, size, seed, max_objects, withhold=withhold)
    return Pairs(images, [caption(s) for s in scenes], scenes)


def folder_pairs(path: str | Path, size: int, least: int = 2) -> Pairs:
    """Read `captions.csv` or `captions.jsonl` in `path`; every listed image, resized. At least
    `least` of them: a contrastive model needs 2 (one pair has nothing to tell apart), a subject
    for fine-tuning or inversion 1."""
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
    if len(rows) < least:
        raise DataError(f"{root} lists {len(rows)} captioned images; add at least {least}")
    images = torch.stack([load_image(root / p, size) for p, _ in rows])
    return Pairs(images, [c for _, c in rows])


def to_float(images: torch.Tensor) -> torch.Tensor:
    return images.float().div(127.5).sub(1.0)
