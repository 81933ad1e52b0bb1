import re

import pytest

from inkfuse.config import (
    RECIPES_DIR,
    ClipConfig,
    Config,
    TrainConfig,
    VAEConfig,
    from_dict,
    load_recipe,
    parse_override,
    replace,
)
from inkfuse.errors import ConfigError


def test_every_builtin_recipe_loads():
    for name in ["shapes", "mnist", "fashion-mnist", "unet-denoise", "ddpm-course", "sprites",
                 "shapes-text", "shapes-sr", "shapes-latent", "fashion-mnist-latent"]:
        assert isinstance(load_recipe(name), Config)
    kinds = {p.stem: type(load_recipe(p.stem)) for p in RECIPES_DIR.glob("*.toml")}
    assert kinds["vae-shapes"] is kinds["vae-fashion-mnist"] is VAEConfig
    assert kinds["clip-shapes"] is ClipConfig
    assert {n for n, k in kinds.items() if k is not Config} == {
        "vae-shapes", "vae-fashion-mnist", "clip-shapes"}


@pytest.mark.parametrize(("name", "kind", "message"), [
    ("vae-shapes", "diffusion",
     "recipes/vae-shapes.toml is a VAE recipe: train it with `inkfuse vae train vae-shapes`"),
    ("shapes", "clip",
     "recipes/shapes.toml is a diffusion recipe: train it with `inkfuse train shapes`"),
    ("clip-shapes", "vae",
     "recipes/clip-shapes.toml is a CLIP recipe: train it with `inkfuse clip train clip-shapes`"),
    ("shapes", "gan", "unknown recipe kind 'gan' (known: diffusion, vae, clip)"),
])
def test_a_recipe_of_another_kind_names_the_command_that_trains_it(name, kind, message):
    with pytest.raises(ConfigError) as e:
        load_recipe(name, kind=kind)
    assert str(e.value) == message


def test_the_kind_comes_from_the_file_not_from_overrides(tmp_path):
    assert isinstance(load_recipe("vae-shapes", kind="vae"), VAEConfig)
    with pytest.raises(ConfigError, match=r"unknown section \[vae\]"):
        load_recipe("shapes", ["vae.kl_weight=0.1"])
    own = tmp_path / "mine.toml"
    own.write_text("[clip]\nwidth = 64\nheads = 2\n")
    with pytest.raises(ConfigError, match=f"{own} is a CLIP recipe: train it with "
                                          f"`inkfuse clip train {own}`"):
        load_recipe(own, kind="diffusion")
    assert load_recipe(own).clip.width == 64


def test_every_kind_shares_one_train_table_with_its_own_defaults():
    vae, clip = load_recipe("vae-shapes"), ClipConfig()
    assert type(vae.train) is type(clip.train) is type(Config().train) is TrainConfig
    assert VAEConfig().train.ema_decay == clip.train.ema_decay == 0.0  # no EMA by default
    assert (clip.train.batch_size, clip.train.weight_decay, clip.train.grad_clip) == (128, 0.1, 0)
    assert load_recipe("clip-shapes") == clip  # the built-in recipe spells out the defaults
    # a table names only what it changes; the kind's defaults fill the rest
    assert VAEConfig.from_dict({"train": {"lr": 0.01}}).train.steps == 3000
    with pytest.raises(ConfigError, match=r"train\.batch_size must be at least 2"):
        load_recipe("clip-shapes", ["train.batch_size=1"])


def test_vae_and_clip_recipes_round_trip_and_replace():
    for name in ("vae-fashion-mnist", "clip-shapes"):
        c = load_recipe(name)
        assert type(c).from_dict(c.to_dict()) == c
        assert replace(c, train={"steps": 3}).train.steps == 3
    with pytest.raises(ConfigError, match=r"vae\.kl_weight = 2\.0 is out of range"):
        replace(load_recipe("vae-shapes"), vae={"kl_weight": 2.0})


def test_override_parses_toml_values():
    assert parse_override("train.steps=200") == (["train", "steps"], 200)
    assert parse_override("model.channel_mult=[1,2]") == (["model", "channel_mult"], [1, 2])
    assert parse_override("data.name=mnist") == (["data", "name"], "mnist")
    c = load_recipe("shapes", ["train.steps=7", "train.lr=0.01", "model.attention_resolutions=[8]"])
    assert (c.train.steps, c.train.lr, c.model.attention_resolutions) == (7, 0.01, [8])


@pytest.mark.parametrize("override, message", [
    ("train.stepz=3", "unknown key train.stepz"),
    ("bogus.x=1", "unknown section [bogus]"),
    ("train.lr=-1", "train.lr = -1.0 is out of range"),
    ("model.norm=layer", "model.norm = 'layer' is not one of: group, batch"),
    ("train.steps=1.5", "train.steps must be an integer"),
    ("train.channels_last=3", "train.channels_last must be true or false"),
    ("data.size=30", "divisible by 2^(levels-1)"),
    ("trainsteps", "must look like section.key=value"),
])
def test_bad_values_get_one_line_errors(override, message):
    with pytest.raises(ConfigError, match=re.escape(message)) as e:
        load_recipe("shapes", [override])
    assert "\n" not in str(e.value)


def test_missing_and_malformed_recipe(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_recipe(tmp_path / "nope.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[train\nsteps = ")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_recipe(bad)


def test_round_trip_and_replace():
    c = load_recipe("mnist")
    assert from_dict(c.to_dict()) == c
    assert replace(c, train={"steps": 3}).train.steps == 3


def test_text_settings_are_checked_together():
    with pytest.raises(ConfigError, match="attention_resolutions"):
        load_recipe("shapes", ["data.labels='text'", "text.conditioning='cross-attention'"])
    with pytest.raises(ConfigError, match="clip-image"):
        load_recipe("shapes-text", ["data.labels='clip-image'"])
    with pytest.raises(ConfigError, match="apply only to data"):
        load_recipe("mnist", ["data.holdout=0.1"])
    assert load_recipe("shapes-text").text.conditioning == "both"
