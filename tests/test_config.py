import re

import pytest

from inkfuse.config import (
    RECIPES_DIR,
    ClipConfig,
    Config,
    GANConfig,
    TextLMConfig,
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
    assert kinds["textlm-shapes"] is TextLMConfig
    assert kinds["gan-fashion-mnist"] is GANConfig
    assert {n for n, k in kinds.items() if k is not Config} == {
        "vae-shapes", "vae-fashion-mnist", "clip-shapes", "textlm-shapes", "gan-fashion-mnist"}


@pytest.mark.parametrize(("name", "kind", "message"), [
    ("vae-shapes", "diffusion",
     "recipes/vae-shapes.toml is a VAE recipe: train it with `inkfuse vae train vae-shapes`"),
    ("shapes", "clip",
     "recipes/shapes.toml is a diffusion recipe: train it with `inkfuse train shapes`"),
    ("clip-shapes", "vae",
     "recipes/clip-shapes.toml is a CLIP recipe: train it with `inkfuse clip train clip-shapes`"),
    ("gan-fashion-mnist", "vae", "recipes/gan-fashion-mnist.toml is a GAN recipe: train it "
     "with `inkfuse gan train gan-fashion-mnist`"),
    ("shapes", "flow", "unknown recipe kind 'flow' (known: diffusion, vae, clip, textlm, gan)"),
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


# every float of every kind is checked by the one generic field check
@pytest.mark.parametrize(("recipe", "override", "message"), [
    ("shapes", "train.ema_decay=nan", "train.ema_decay = nan is not a finite number"),
    ("shapes", "train.lr=nan", "train.lr = nan is not a finite number; give a number in "
                               "[0.0, 10.0]"),
    ("shapes", "train.max_minutes=inf", "train.max_minutes = inf is not a finite number"),
    ("shapes", "diffusion.min_snr_gamma=-inf", "diffusion.min_snr_gamma = -inf is not a finite"),
    ("shapes", "sample.guidance=nan", "sample.guidance = nan is not a finite number"),
    ("vae-shapes", "vae.kl_weight=nan", "vae.kl_weight = nan is not a finite number"),
    ("clip-shapes", "train.weight_decay=inf", "train.weight_decay = inf is not a finite"),
])
def test_nan_and_infinity_never_pass(recipe, override, message):
    with pytest.raises(ConfigError, match=re.escape(message)) as e:
        load_recipe(recipe, [override])
    assert "\n" not in str(e.value)


@pytest.mark.parametrize(("recipe", "overrides", "message"), [
    ("shapes", ["model.channel_mult=[1,0,2]"],
     "model.channel_mult = [1, 0, 2]: entry 1 is 0, but every entry must be at least 1"),
    ("shapes", ["model.channel_mult=[-1,2]"], "entry 0 is -1, but every entry must be at least"),
    ("shapes", ["model.attention_resolutions=[3]"],
     "model.attention_resolutions = [3]: the U-Net's levels are 16, 8, 4 px"),
    ("shapes", ["model.attention_resolutions=[-8]"], "entry 0 is -8, but every entry must be"),
    ("shapes", ["model.attention_resolutions=[16]", "model.head_dim=24"],
     "model.head_dim = 24 does not divide the width 32 of the 16 px level"),
    ("shapes", ["model.attention_resolutions=[4]", "model.head_dim=48"],
     "model.head_dim = 48 does not divide the width 64 of the 4 px level"),
    ("shapes", ["model.channel_mult=[2,2,3]", "model.attention_resolutions=[16]",
                "model.head_dim=64"], "does not divide the width 96 of the mid block"),
    ("shapes", ["model.base_channels=12", "model.groups=8"], "is not divisible by model.groups"),
    ("shapes", ["model.base_channels=5", "model.groups=1"], "must be even for the sinusoidal"),
    ("vae-shapes", ["vae.channel_mult=[1,0,2]"], "vae.channel_mult = [1, 0, 2]: entry 1 is 0"),
    ("vae-shapes", ["vae.attention=true", "vae.head_dim=24"],
     "vae.head_dim = 24 does not divide the deepest width 32"),
    ("clip-shapes", ["clip.width=30", "clip.heads=4"], "clip.width = 30 is not divisible by"),
    ("clip-shapes", ["clip.channels=[8,0]"], "clip.channels = [8, 0]: entry 1 is 0"),
    ("clip-shapes", ["clip.channels=[]"], "clip.channels needs at least one image stage"),
    ("clip-shapes", ["data.size=8", "clip.channels=[8,8,8,8,8]"], "halve data.size = 8 below"),
])
def test_model_shapes_that_cannot_be_built_are_refused(recipe, overrides, message):
    with pytest.raises(ConfigError, match=re.escape(message)) as e:
        load_recipe(recipe, overrides)
    assert "\n" not in str(e.value)


def test_attention_sizes_of_a_latent_model_wait_for_the_latent_side():
    """Before the VAE is read the latent side is unknown: sizes are checked again in
    train.diffusion.resolve, with model.size filled in."""
    c = load_recipe("shapes-latent", ["model.attention_resolutions=[4]"])
    with pytest.raises(ConfigError, match=r"levels are 8, 4, 2 px, so 16 would get no"):
        replace(c, model={"size": 8, "attention_resolutions": [16]})


def test_withhold_names_real_words_of_the_shapes():
    assert load_recipe("shapes-text", ["data.withhold=['cyan']"]).data.withhold == ["cyan"]
    with pytest.raises(ConfigError, match="'purple' is not a shapes kind or colour"):
        load_recipe("shapes-text", ["data.withhold=['purple']"])
    with pytest.raises(ConfigError, match=re.escape("only to data.name = 'shapes'")):
        load_recipe("mnist", ["data.withhold=['red']"])
    with pytest.raises(ConfigError, match="too little to draw"):
        load_recipe("shapes", ["data.withhold=['circle', 'square', 'triangle', 'cross']"])
    with pytest.raises(ConfigError, match="'a white triangle to the left of a magenta cross' asks"):
        load_recipe("shapes-text", ["data.withhold=['magenta']"])  # the recipe's last prompt
