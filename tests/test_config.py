import re

import pytest

from inkfuse.config import Config, from_dict, load_recipe, parse_override, replace
from inkfuse.errors import ConfigError


def test_every_builtin_recipe_loads():
    for name in ["shapes", "mnist", "fashion-mnist", "unet-denoise", "ddpm-course", "sprites",
                 "shapes-text", "shapes-sr", "shapes-latent", "fashion-mnist-latent"]:
        assert isinstance(load_recipe(name), Config)


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
