"""Every built-in recipe trains on its real data and samples, at a few steps each."""

import json

import pytest
import torch

from inkfuse import load_recipe, load_run, sample, train

QUICK = ["train.steps=2", "train.batch_size=8", "train.checkpoint_every=2", "data.limit=64",
         "sample.steps=2", "sample.per_class=1", "train.max_minutes=0"]


EXTRA = {"shapes-text": ["text.clip_steps=3", "data.count=64"],
         "shapes-sr": ["data.count=64", "data.size=32", "data.low_res=8"]}


@pytest.mark.parametrize("recipe", ["unet-denoise", "ddpm-course", "mnist", "fashion-mnist",
                                    "shapes-text", "shapes-sr"])
def test_recipe_trains_and_samples(recipe, tmp_path):
    overrides = [*QUICK, *EXTRA.get(recipe, [])]
    run_dir = train(load_recipe(recipe, overrides), tmp_path / recipe, progress=False)
    run = load_run(run_dir)
    low = torch.zeros(2, 3, 8, 8) if run.config.data.low_res else None
    images = sample(run, 2, steps=1, progress=False, low_res=low)
    assert images.shape[0] == 2 and images.abs().max() <= 1
    if recipe == "unet-denoise":
        assert run.net.time_embed is None  # the course's U-Net never sees t


@pytest.mark.parametrize(("recipe", "extra"), [
    ("vae-shapes", ["data.count=64", "vae.eval_count=16"]),
    ("vae-fashion-mnist", ["vae.eval_count=16"]),
    ("clip-shapes", ["data.count=64", "clip.eval_count=16", "data.size=16"]),
    ("textlm-shapes", ["data.count=64", "textlm.eval_count=16"]),
    ("gan-fashion-mnist", ["gan.eval_count=16"])])
def test_vae_and_clip_recipes_train_and_score(recipe, extra, tmp_path):
    """The same QUICK settings: one [train] table for every kind."""
    config = load_recipe(recipe, [*QUICK[:2], "train.checkpoint_every=2", "data.limit=64",
                                  "train.max_minutes=0", *extra])
    out = train(config, tmp_path / recipe, progress=False)
    meta = json.loads((out / f"{recipe.split('-')[0]}.json").read_text())
    assert meta["metrics"]["steps"] == 2 and meta["config"] == config.to_dict()
