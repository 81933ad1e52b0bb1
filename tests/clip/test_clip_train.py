"""Training a tiny CLIP on shapes: it learns, saves, loads, and refuses foreign weights."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from inkfuse.artifacts.clip import load_clip
from inkfuse.cli import build_parser
from inkfuse.cli.clip import add_clip_parser, check_prompt
from inkfuse.config import ClipConfig, load_recipe
from inkfuse.errors import CheckpointError, ConfigError
from inkfuse.metrics.clip import embed_texts
from inkfuse.train import train

TINY = ["data.size=16", "data.count=4096", "data.caption_dropout=0.6", "clip.eval_count=256",
        "clip.channels=[16, 32]", "clip.width=64", "clip.layers=2", "clip.heads=2",
        "clip.embed_dim=64", "clip.context_length=16", "train.steps=300", "train.batch_size=64",
        "train.lr=2e-3", "train.warmup_steps=15", "train.seed=0"]


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def run(one_thread: None, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """~12 s on one CPU core: 300 steps of batch 64 at 16 px."""
    out = tmp_path_factory.mktemp("clip")
    train(load_recipe("clip-shapes", TINY), out, progress=False)
    return out, json.loads((out / "clip.json").read_text())["metrics"]


def test_learns_shapes(run: tuple[Path, dict]) -> None:
    out, metrics = run
    assert metrics["loss_last"] < 0.6 * metrics["loss_first"]
    assert metrics["zero_shot_kind"] > 0.4  # 4 kinds: chance is 25 % (measured 0.73)
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


def test_hard_negatives_train_resume_and_are_scored(tmp_path: Path, killed_after_checkpoint
                                                     ) -> None:
    """NegCLIP on two-object captions: the held-out swap accuracies are reported, and a run
    killed after its first checkpoint resumes to the same weights (negatives are drawn from the
    step's generator)."""
    from safetensors.torch import load_file

    short = [*TINY[:-4], "data.max_objects=2", "data.count=1024", "clip.hard_negatives=2",
             "train.steps=6", "train.batch_size=16", "train.checkpoint_every=3"]
    train(load_recipe("clip-shapes", short), tmp_path / "whole", progress=False)
    metrics = json.loads((tmp_path / "whole" / "clip.json").read_text())["metrics"]
    for name in ("neg_two_colour", "neg_two_relation", "neg_two_all", "neg_one_all"):
        assert 0.0 <= metrics[name] <= 1.0
    killed_after_checkpoint(load_recipe("clip-shapes", short), tmp_path / "cut")
    train(load_recipe("clip-shapes", short), tmp_path / "cut", progress=False)
    a, b = (load_file(tmp_path / d / "clip.safetensors") for d in ("whole", "cut"))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_config_errors() -> None:
    with pytest.raises(ConfigError, match=r"clip\.hard_negatives needs the shapes captions"):
        load_recipe("clip-shapes", ["data.name='folder'", "data.path='x'",
                                    "data.caption_dropout=0", "clip.hard_negatives=1"])
    with pytest.raises(ConfigError, match=r"unknown key clip\.stepz"):
        load_recipe("clip-shapes", ["clip.stepz=3"])
    with pytest.raises(ConfigError, match=r"data\.size = 4 is out of range"):
        load_recipe("clip-shapes", ["data.size=4"])
    with pytest.raises(ConfigError, match=r"clip\.width = 62 is not divisible by clip\.heads"):
        ClipConfig.from_dict({"clip": {"width": 62}})
    with pytest.raises(ConfigError, match="'shapes' or a 'folder'"):
        load_recipe("clip-shapes", ["data.name='mnist'"])
    with pytest.raises(ConfigError, match=r"clip-shapes\.toml is a CLIP recipe: train it with "
                                          r"`inkfuse clip train clip-shapes`"):
        load_recipe("clip-shapes", kind="diffusion")


def test_cli_train_score_similarity(tmp_path: Path, run: tuple[Path, dict]) -> None:
    from PIL import Image

    from inkfuse.data.shapes import ShapeSpec, render

    parser = build_parser() if _has_clip(build_parser()) else _clip_only_parser()
    out = tmp_path / "run"
    sets = ["train.steps=2", "train.batch_size=16", "data.size=8", "data.count=64",
            "clip.eval_count=16", "clip.channels=[8]", "clip.width=16"]
    args = parser.parse_args(["clip", "train", "clip-shapes", "--out", str(out), "--quiet",
                              *[a for s in sets for a in ("--set", s)]])
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
