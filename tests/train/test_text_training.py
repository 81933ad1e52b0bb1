"""Text to image end to end on tiny shapes runs: train (a CLIP first), load, sample from prompts,
mix prompts, sweep guidance from the CLI, and refuse bad prompts with one line."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from inkfuse import pipelines
from inkfuse.cli import main
from inkfuse.config import load_recipe
from inkfuse.errors import CheckpointError, ConfigError
from inkfuse.train import train

TEXT = ["data.labels='text'", "data.max_objects=2", "data.caption_dropout=0.3",
        "model.attention_resolutions=[8]", "model.head_dim=8", "text.clip_steps=10",
        "text.conditioning='both'", "sample.prompts=['a red circle', 'a blue square']"]


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def text_run(tmp_path_factory: pytest.TempPathFactory, tiny_overrides: list[str]) -> Path:
    """A few seconds: a 10-step CLIP on the captions, then 6 U-Net steps."""
    out = tmp_path_factory.mktemp("text")
    return train(load_recipe("shapes", [*tiny_overrides, *TEXT]), out, progress=False)


def test_a_text_run_keeps_its_clip_and_samples_prompts(text_run: Path) -> None:
    clip = json.loads((text_run / "clip" / "clip.json").read_text())  # trained by the one loop
    assert clip["config"]["train"]["steps"] == 10 and clip["metrics"]["steps"] == 10
    assert (clip["config"]["data"]["size"], clip["config"]["data"]["max_objects"]) == (16, 2)
    assert (text_run / "clip" / "checkpoint" / "state.json").is_file()
    run = pipelines.load_run(text_run)
    assert run.text is not None and run.prompts == ["a red circle", "a blue square"]
    assert run.config.model.cond_dim and run.config.model.token_dim
    options = dict(steps=3, guidance=3.0, progress=False, seed=5)
    a = pipelines.sample(run, 3, prompts=["a red circle above a blue square"], **options)
    b = pipelines.sample(run, 3, prompts=["a red circle above a blue square"], **options)
    other = pipelines.sample(run, 3, prompts=["a green cross"], **options)
    assert a.shape == (3, 3, 16, 16) and torch.equal(a, b) and not torch.equal(a, other)
    mixed = pipelines.sample(run, 2, prompts=["a red circle :0.7 | a green cross :0.3"],
                             **options)
    assert mixed.shape == (2, 3, 16, 16) and mixed.isfinite().all()
    grid, rows = pipelines.sample_grid(run, per_class=2, steps=2, progress=False)
    assert grid.shape[0] == 4 and rows == run.prompts


@pytest.mark.parametrize(("prompt", "message"), [
    ("a red zebra", "never saw in training: zebra"),
    ("   ", "the prompt is empty"),
    ("a red circle " * 12, "the model reads at most"),
])
def test_bad_prompts_get_one_clear_error(text_run: Path, prompt: str, message: str) -> None:
    run = pipelines.load_run(text_run)
    with pytest.raises(ConfigError, match=message):
        pipelines.sample(run, 1, prompts=[prompt], steps=2, progress=False)


def test_parse_mix() -> None:
    assert pipelines.parse_mix("a red circle") == (["a red circle"], (1.0,))
    texts, weights = pipelines.parse_mix("a red circle :3 | a blue square:1")
    assert texts == ["a red circle", "a blue square"] and weights == (0.75, 0.25)
    with pytest.raises(ConfigError, match="weights"):
        pipelines.parse_mix("a :0 | b :0")


def test_cli_prompts_guidance_sweep_and_npz(text_run: Path, tmp_path: Path, capsys) -> None:
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("# one per line\na red circle\n\na blue square in the top left\n")
    out = tmp_path / "sweep.npz"
    assert main(["sample", str(text_run), "--prompts-file", str(prompts), "--prompt",
                 "a green cross", "--guidance", "0,1,4", "--n", "2", "--steps", "2",
                 "--out", str(out)]) == 0
    arrays = np.load(out)
    assert arrays["images"].shape == (3 * 3 * 2, 16, 16, 3)
    assert list(arrays["guidance"][::6]) == [0, 1, 4]
    assert arrays["prompts"][2] == "a red circle"
    png = tmp_path / "sweep.png"
    assert main(["sample", str(text_run), "--prompt", "a red circle", "--guidance", "1,4",
                 "--n", "2", "--steps", "2", "--out", str(png)]) == 0
    assert png.is_file()
    capsys.readouterr()
    assert main(["sample", str(text_run), "--class", "1", "--out", str(png)]) == 1
    assert "text-conditioned: use --prompt" in capsys.readouterr().err
    assert main(["sample", str(text_run), "--prompts-file", str(tmp_path / "nope.txt"),
                 "--out", str(png)]) == 1
    assert "cannot read --prompts-file" in capsys.readouterr().err


def test_clip_image_embeddings_train_and_text_samples(text_run: Path, tmp_path: Path,
                                                      tiny_overrides: list[str]) -> None:
    """The course's trick: condition on CLIP image embeddings, sample from a prompt."""
    config = load_recipe("shapes", [*tiny_overrides, "data.labels='clip-image'",
                                    f"text.encoder='{text_run / 'clip'}'"])
    out = train(config, tmp_path / "img", progress=False)
    run = pipelines.load_run(out)
    assert run.config.model.token_dim == 0 and (out / "clip" / "clip.safetensors").is_file()
    images = pipelines.sample(run, 2, prompts=["a red circle"], steps=2, progress=False)
    assert images.shape == (2, 3, 16, 16)


def test_a_missing_text_encoder_is_one_line(tmp_path: Path, tiny_overrides: list[str]) -> None:
    config = load_recipe("shapes", [*tiny_overrides, *TEXT, f"text.encoder='{tmp_path / 'x'}'"])
    with pytest.raises(CheckpointError, match="clip"):
        train(config, tmp_path / "run", progress=False)


@pytest.mark.parametrize("encoder", ["lm", "negclip"])
def test_other_text_encoders_train_on_the_fly_and_sample(encoder: str, tmp_path: Path,
                                                         tiny_overrides: list[str]) -> None:
    """text.kind = 'lm' pretrains a masked LM on the captions (Imagen), text.hard_negatives a
    NegCLIP; either lands in RUN/clip, is kept on resume, and conditions the U-Net."""
    extra = ["text.kind='lm'"] if encoder == "lm" else ["text.hard_negatives=1"]
    config = load_recipe("shapes", [*tiny_overrides, *TEXT, *extra])
    out = train(config, tmp_path / "run", progress=False)
    meta = "textlm.json" if encoder == "lm" else "clip.json"
    saved = json.loads((out / "clip" / meta).read_text())
    assert saved["metrics"]["steps"] == 10
    if encoder == "negclip":
        assert saved["config"]["clip"]["hard_negatives"] == 1 and "neg_two_all" in saved["metrics"]
    before = (out / "clip" / meta).stat().st_mtime_ns
    train(load_recipe("shapes", [*tiny_overrides, *TEXT, *extra, "train.steps=8"]), out,
          progress=False)  # resumed: the text encoder is not trained again
    assert (out / "clip" / meta).stat().st_mtime_ns == before
    run = pipelines.load_run(out)
    images = pipelines.sample(run, 2, prompts=["a red circle above a blue square"], steps=2,
                              guidance=3.0, progress=False)
    assert images.shape == (2, 3, 16, 16)


def test_text_encoder_options_that_cannot_work_are_refused(tiny_overrides: list[str]) -> None:
    with pytest.raises(ConfigError, match=r"text\.kind = 'lm' trains a text-only encoder"):
        load_recipe("shapes", [*tiny_overrides, *TEXT, "text.kind='lm'", "text.hard_negatives=1"])
    with pytest.raises(ConfigError, match=r"text\.hard_negatives edits the scenes of shapes"):
        load_recipe("shapes", [*tiny_overrides, "data.labels='text'", "data.name='folder'",
                               "data.path='x'", "model.attention_resolutions=[8]",
                               "model.head_dim=8", "text.hard_negatives=1"])
    # a given encoder makes the recipe's NegCLIP setting moot, not wrong
    assert load_recipe("shapes-text", ["text.encoder='runs/clip'", "text.hard_negatives=1"
                                       ]).text.hard_negatives == 1
