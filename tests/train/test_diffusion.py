"""Diffusion training: the run dir it writes, its progress grids, resume checks, bf16."""

import json
import os

import numpy as np
import pytest
import torch
from PIL import Image

from inkfuse import pipelines, viz
from inkfuse.artifacts import checkpoint
from inkfuse.artifacts.run import load_run
from inkfuse.config import load_recipe
from inkfuse.data import build_dataset
from inkfuse.diffusion import Denoiser, Schedule
from inkfuse.errors import CheckpointError, ConfigError
from inkfuse.nn import build_model
from inkfuse.train import diffusion, trainer

pytestmark = pytest.mark.usefixtures("one_thread")


def test_training_writes_a_complete_run_dir(tmp_path, tiny_overrides):
    run = trainer.train(load_recipe("shapes", tiny_overrides), tmp_path / "run", progress=False)
    assert (run / "config.json").is_file() and (run / "loss.png").is_file()
    assert {p.name for p in (run / "checkpoint").iterdir()} == {
        "model.safetensors", "ema.safetensors", "trainer.safetensors", "state.json"}
    assert json.loads((run / "checkpoint" / "state.json").read_text())["step"] == 6
    steps = [json.loads(line)["step"] for line in (run / "log.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4, 5, 6]
    assert sorted(p.name for p in (run / "samples").iterdir()) == [
        "step-0000003.png", "step-0000006.png"]
    saved = json.loads((run / "config.json").read_text())
    assert saved["model"]["cond_dim"] == len(saved["dataset"]["class_names"]) >= 4
    assert not any(p.name.endswith(".tmp") for p in run.rglob("*"))


@pytest.mark.parametrize("case", ["class", "text"])
def test_progress_grids_are_the_grids_of_the_saved_run(case, tmp_path, tiny_overrides):
    """Drawn from the EMA weights in memory, a grid has the pixels of one drawn from the run
    dir reloaded (what the trainer drew before it kept the EMA net)."""
    text = ["data.labels='text'", "model.attention_resolutions=[8]", "model.head_dim=8",
            "text.conditioning='both'", "text.clip_steps=2", "sample.prompts=['a red circle']"]
    config = load_recipe("shapes", [*tiny_overrides, *(text if case == "text" else [])])
    run_dir = trainer.train(config, tmp_path / "run", progress=False)
    run = load_run(run_dir)
    images, labels = pipelines.sample_grid(run, per_class=config.sample.per_class,
                                           progress=False)
    viz.save_grid(images, tmp_path / "reloaded.png", nrow=config.sample.per_class, labels=labels)
    grids = [np.asarray(Image.open(p)) for p in (run_dir / "samples/step-0000006.png",
                                                 tmp_path / "reloaded.png")]
    assert np.array_equal(*grids)


def test_train_refuses_what_is_no_recipe(tmp_path):
    with pytest.raises(ConfigError, match="takes a recipe"):
        trainer.train({"train": {}}, tmp_path / "run", progress=False)


def test_half_swapped_checkpoint_falls_back_to_the_old_one(tmp_path, tiny_overrides):
    run = trainer.train(load_recipe("shapes", tiny_overrides), tmp_path / "run", progress=False)
    os.replace(run / "checkpoint", run / "checkpoint.old")  # a crash between the two renames
    assert checkpoint.find(run) == run / "checkpoint.old"
    assert load_run(run).net is not None


def test_resume_refuses_a_different_model(tmp_path, tiny_overrides):
    trainer.train(load_recipe("shapes", tiny_overrides), tmp_path / "run", progress=False)
    other = load_recipe("shapes", [*tiny_overrides, "model.base_channels=16"])
    with pytest.raises(CheckpointError, match=r"model\.base_channels = 8, not 16"):
        trainer.train(other, tmp_path / "run", progress=False)


def test_bf16_loss_tracks_fp32(tiny_overrides):
    config = load_recipe("shapes", tiny_overrides)
    data = build_dataset(config.data, seed=0)
    config = diffusion.resolve(config, data)
    torch.manual_seed(0)
    net = build_model(config.model, 16, 50)
    x0 = data.to_float(slice(0, 32))
    losses = {}
    for precision in ("fp32", "bf16"):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
            g = torch.Generator().manual_seed(1)
            losses[precision] = Denoiser(net, Schedule("cosine", 50)).loss(x0, None, generator=g)
    assert losses["bf16"].item() == pytest.approx(losses["fp32"].item(), rel=0.05)
