"""Training a tiny CLIP on shapes: it learns, saves, loads, and refuses foreign weights."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from inkfuse.cli import build_parser
from inkfuse.clip.cli import add_clip_parser, check_prompt
from inkfuse.clip.train import clip_config, embed_texts, load_clip, train_clip
from inkfuse.errors import CheckpointError, ConfigError

TINY = dict(size=16, count=4096, eval_count=256, steps=300, batch_size=64, channels=[16, 32],
            width=64, layers=2, heads=2, embed_dim=64, context_length=16, lr=2e-3,
            warmup_steps=15, caption_dropout=0.6, seed=0)


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def run(one_thread: None, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """~12 s on one CPU core: 300 steps of batch 64 at 16 px."""
    out = tmp_path_factory.mktemp("clip")
    return out, train_clip(TINY, out, progress=False)


def test_learns_shapes(run: tuple[Path, dict]) -> None:
    out, metrics = run
    assert metrics["loss_last"] < 0.6 * metrics["loss_first"]
    assert metrics["zero_shot_kind"] > 0.4  # 4 kinds: chance is 25 % (measured 0.65)
    assert metrics["zero_shot_colour"] > 0.5  # 8 colours: chance is 12.5 %
    assert metrics["text_to_image_r5"] > 0.5 and metrics["image_to_text_r5"] > 0.5
    assert (out / "similarity.png").stat().st_size > 0


def test_save_load_round_trip(run: tuple[Path, dict]) -> None:
    out, metrics = run
    model, tok, meta = load_clip(out)
    assert meta["metrics"] == metrics
    assert not model.training and model.cfg.vocab_size == tok.vocab_size
    a = embed_texts(model, tok, ["a red circle", "a small blue square in the center"])
    model2, tok2, _ = load_clip(out)
    assert torch.equal(a, embed_texts(model2, tok2, ["a red circle",
                                                     "a small blue square in the center"]))


def test_foreign_weights_are_refused(run: tuple[Path, dict], tmp_path: Path) -> None:
    out, _ = run
    meta = json.loads((out / "clip.json").read_text())
    meta["model"]["width"] = 32  # a different architecture beside the same weights
    (tmp_path / "clip.json").write_text(json.dumps(meta))
    (tmp_path / "clip.safetensors").write_bytes((out / "clip.safetensors").read_bytes())
    with pytest.raises(CheckpointError, match="different model"):
        load_clip(tmp_path)
    with pytest.raises(CheckpointError, match="missing"):
        load_clip(tmp_path / "nowhere")


def test_unknown_prompt_words_are_refused(run: tuple[Path, dict]) -> None:
    _, tok, _ = load_clip(run[0])
    check_prompt(tok, "A red circle in the top left")
    with pytest.raises(ConfigError, match=r"never saw.*zebra"):
        check_prompt(tok, "a red zebra")


def test_config_errors() -> None:
    with pytest.raises(ConfigError, match=r"unknown key clip\.stepz"):
        clip_config({"stepz": 3})
    with pytest.raises(ConfigError, match=r"clip\.size = 4 is out of range"):
        clip_config({"size": 4})


def test_cli_train_score_similarity(tmp_path: Path, run: tuple[Path, dict]) -> None:
    from PIL import Image

    from inkfuse.data.shapes import ShapeSpec, render

    parser = build_parser() if _has_clip(build_parser()) else _clip_only_parser()
    out = tmp_path / "run"
    args = parser.parse_args(["clip", "train", "--out", str(out), "--steps", "2", "--size", "8",
                              "--set", "count=64", "--set", "eval_count=16", "--set",
                              "channels=[8]", "--set", "width=16", "--quiet"])
    args.fn(args)
    args = parser.parse_args(["clip", "score", str(out)])
    args.fn(args)
    assert "text_to_image_r1" in json.loads((out / "score.json").read_text())
    paths = []
    for i, spec in enumerate([ShapeSpec("circle", "red", "large", 0.5, 0.5),
                              ShapeSpec("square", "blue", "large", 0.5, 0.5)]):
        paths.append(tmp_path / f"{i}.png")
        Image.fromarray(render([spec], 16).permute(1, 2, 0).numpy()).save(paths[-1])
    args = parser.parse_args(["clip", "similarity", str(run[0]), "--image", str(paths[0]),
                              "--image", str(paths[1]), "--text", "a red circle", "--text",
                              "a blue square", "--out", str(tmp_path / "heat.png")])
    args.fn(args)
    assert (tmp_path / "heat.png").stat().st_size > 0


def _has_clip(parser) -> bool:
    try:
        parser.parse_args(["clip", "score", "x"])
        return True
    except SystemExit:
        return False


def _clip_only_parser():
    import argparse

    parser = argparse.ArgumentParser()
    add_clip_parser(parser.add_subparsers(dest="command", required=True))
    return parser
