"""The GAN: its losses against closed forms, the routing of each player's gradient, spectral
norm, exact resume on the shared loop, save/load, the CLI's one-line errors, and that a short run
on Fashion-MNIST beats its untrained generator."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from inkfuse.artifacts.gan import load_gan
from inkfuse.cli.app import main
from inkfuse.config import GANConfig, GANModelConfig, load_recipe
from inkfuse.errors import CheckpointError, ConfigError
from inkfuse.nn.gan import GAN, SNConv2d, generate, hinge_d_loss, hinge_g_loss
from inkfuse.train import train
from inkfuse.train.gan import score_generator
from inkfuse.train.loop import HELD_OUT_SEED, seed_for

pytestmark = pytest.mark.usefixtures("one_thread")

TINY_ARCH = GANModelConfig(z_dim=8, g_channels=8, d_channels=8, groups=4, num_classes=3,
                           in_channels=1, image_size=8)
# a few-second Fashion-MNIST run: 512 images, the recipe's architecture
SHORT = ["data.limit=512", "train.steps=6", "train.batch_size=16", "train.checkpoint_every=3",
         "train.log_every=1", "train.max_minutes=0", "gan.eval_count=16"]


def same_tensors(a: Path, b: Path) -> bool:
    from safetensors.torch import load_file

    x, y = load_file(str(a)), load_file(str(b))
    return x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x)


# ----------------------------------------------------------------------------- losses


def test_hinge_losses_match_their_closed_forms() -> None:
    d_real = torch.tensor([2.0, 0.5, -1.0])
    d_fake = torch.tensor([-2.0, 0.0, 1.5])
    # max(0, 1 - r) = [0, 0.5, 2]; max(0, 1 + f) = [0, 1, 2.5]
    assert hinge_d_loss(d_real, d_fake).item() == pytest.approx(2.5 / 3 + 3.5 / 3)
    assert hinge_g_loss(d_fake).item() == pytest.approx(0.5 / 3)


def step_inputs(seed: int = 0) -> tuple[GAN, torch.Tensor, torch.Tensor, torch.Tensor]:
    torch.manual_seed(seed)
    gan = GAN(TINY_ARCH)
    return gan, torch.rand(4, 1, 8, 8) * 2 - 1, torch.tensor([0, 1, 2, 0]), torch.randn(4, 8)


def test_each_player_gets_only_its_own_gradient() -> None:
    gan, real, y, z = step_inputs()
    out = gan(real, y, z)
    g_params = list(gan.generator.parameters())
    d_params = list(gan.discriminator.parameters())
    assert all(g is None for g in torch.autograd.grad(out["d_loss"], g_params, allow_unused=True,
                                                      retain_graph=True))
    assert all(g is None for g in torch.autograd.grad(out["g_loss"], d_params, allow_unused=True,
                                                      retain_graph=True))
    # and each does get its own: the loop's summed loss gives the two gradients side by side
    (out["d_loss"] + out["g_loss"]).backward()
    # (the final bias has none: with every score inside the margins the hinge's slopes
    # are -1 on real and +1 on fake, which cancel)
    assert all(p.grad is not None for p in d_params)
    assert all(p.grad.abs().sum() > 0 for n, p in gan.discriminator.named_parameters()
               if n.endswith("weight"))
    assert gan.generator.fc.weight.grad.abs().sum() > 0


def test_the_power_iteration_moves_once_per_step_and_both_terms_share_sigma() -> None:
    gan, real, y, z = step_inputs()
    conv = gan.discriminator.convs[0]
    u0, v0 = conv.u.clone(), conv.v.clone()
    out = gan(real, y, z)
    w = conv.weight.detach().flatten(1)
    v1 = torch.nn.functional.normalize(w.T @ u0, dim=0)
    assert torch.allclose(conv.v, v1) and torch.allclose(
        conv.u, torch.nn.functional.normalize(w @ v1, dim=0))
    assert not torch.equal(conv.u, u0) and not torch.equal(conv.v, v0)
    # the generator's term scored the fakes with the σ the discriminator's term used
    u1 = conv.u.clone()
    with torch.no_grad():
        again = gan.discriminator(gan.generator(z, y), y, frozen=True)
    assert torch.equal(conv.u, u1)
    assert -again.mean().item() == pytest.approx(out["g_loss"].item(), rel=1e-5)


def test_spectral_norm_bounds_the_largest_singular_value() -> None:
    torch.manual_seed(0)
    conv = SNConv2d(3, 16, 3, padding=1)
    with torch.no_grad():
        conv.weight.mul_(10)
        for _ in range(2000):  # the power iteration converges on the top singular vectors
            w = conv.normalized(frozen=False)
    top = torch.linalg.matrix_norm(w.flatten(1), ord=2).item()
    assert top == pytest.approx(1.0, abs=1e-3)
    assert torch.linalg.matrix_norm(conv.weight.flatten(1), ord=2).item() > 5


# ----------------------------------------------------------------------------- config


@pytest.mark.parametrize(("override", "message"), [
    ("data.labels='context'", r"a GAN is class-conditional \('class'\) or unconditional"),
    ("data.size=30", "data.size = 30 must be divisible by 4"),
    ("gan.g_channels=12", "must all be divisible by gan.groups = 8"),
    ("gan.beta1=1.5", r"gan\.beta1 = 1\.5 is out of range"),
])
def test_bad_recipes_get_one_line_errors(override: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_recipe("gan-fashion-mnist", [override])


def test_the_recipe_is_a_gan_recipe() -> None:
    config = load_recipe("gan-fashion-mnist", kind="gan")
    assert isinstance(config, GANConfig) and config.data.labels == "class"
    with pytest.raises(ConfigError, match=r"is a GAN recipe: train it with `inkfuse gan train"):
        load_recipe("gan-fashion-mnist", kind="diffusion")


# ----------------------------------------------------------------------------- the loop


def test_killed_run_resumes_to_identical_weights(shared_data: Path, tmp_path: Path,
                                                 killed_after_checkpoint) -> None:
    config = load_recipe("gan-fashion-mnist", SHORT)
    straight = train(config, tmp_path / "straight", progress=False)
    killed_after_checkpoint(config, tmp_path / "resumed")
    assert json.loads((tmp_path / "resumed/checkpoint/state.json").read_text())["step"] == 3
    resumed = train(config, tmp_path / "resumed", progress=False)
    for name in ("checkpoint/model.safetensors", "checkpoint/ema.safetensors",
                 "checkpoint/trainer.safetensors", "gan.safetensors"):
        assert same_tensors(straight / name, resumed / name), name
    # the two time-scales reached AdamW: the discriminator's group steps at twice the rate
    state = json.loads((resumed / "checkpoint/state.json").read_text())
    lrs = [group["lr"] for group in state["optimizer"]["param_groups"]]
    assert lrs == [pytest.approx(config.train.lr), pytest.approx(2 * config.train.lr)]


@pytest.fixture(scope="module")
def trained(one_thread: None, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """300 steps of batch 32 on 4096 Fashion-MNIST images: about 25 s on one busy core."""
    if not (Path(os.environ["INKFUSE_DATA"]) / "fashion-mnist").is_dir():
        pytest.skip("Fashion-MNIST not found in INKFUSE_DATA (clone the repo beside shared/)")
    config = load_recipe("gan-fashion-mnist", [
        "data.limit=4096", "train.steps=300", "train.batch_size=32", "train.max_minutes=0",
        "train.checkpoint_every=300", "train.log_every=50", "gan.eval_count=300"])
    return train(config, tmp_path_factory.mktemp("gan") / "run", progress=False)


def test_a_short_run_beats_its_untrained_generator(trained: Path) -> None:
    generator, meta = load_gan(trained)
    config = GANConfig.from_dict(meta["config"])
    torch.manual_seed(seed_for(config.train.seed, 0))  # the loop's initialisation
    untrained = GAN(generator.cfg).generator.eval()
    seed = seed_for(config.train.seed, HELD_OUT_SEED)
    before = score_generator(untrained, config, 300, seed)
    after = meta["metrics"]
    assert after["fd_cls"] < 0.7 * before["fd_cls"] or after["accuracy"] > before["accuracy"] + 0.1
    assert {"gan.json", "gan.safetensors", "samples.png", "log.jsonl"} <= {
        p.name for p in trained.iterdir()}


# ----------------------------------------------------------------------------- save / load


def copy_run(src: Path, dst: Path) -> Path:
    dst.mkdir()
    for name in ("gan.json", "gan.safetensors"):
        (dst / name).write_bytes((src / name).read_bytes())
    return dst


def test_round_trip_and_refusals(trained: Path, tmp_path: Path) -> None:
    generator, meta = load_gan(trained)
    assert not generator.training and len(meta["class_names"]) == 10
    seed = seed_for(GANConfig.from_dict(meta["config"]).train.seed, HELD_OUT_SEED)
    again = score_generator(generator, GANConfig.from_dict(meta["config"]), 300, seed)
    assert again["fd_cls"] == pytest.approx(meta["metrics"]["fd_cls"], rel=1e-6)
    labels = torch.tensor([3, 3])
    assert torch.equal(generate(generator, labels, 7), generate(generator, labels, 7))

    damaged = copy_run(trained, tmp_path / "damaged")
    (damaged / "gan.json").write_text('{"format": "inkfuse-gan-1", "model": 3}')
    with pytest.raises(CheckpointError, match="damaged: model is an integer"):
        load_gan(damaged)
    (damaged / "gan.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="damaged"):
        load_gan(damaged)

    other = copy_run(trained, tmp_path / "other")
    changed = json.loads((other / "gan.json").read_text())
    changed["model"]["g_channels"] = 32  # another architecture beside the same weights
    (other / "gan.json").write_text(json.dumps(changed))
    with pytest.raises(CheckpointError, match="different model"):
        load_gan(other)
    changed["format"] = "inkfuse-vae-1"
    (other / "gan.json").write_text(json.dumps(changed))
    with pytest.raises(CheckpointError, match="not an inkfuse GAN"):
        load_gan(other)


# ----------------------------------------------------------------------------- the CLI


def test_cli_samples_and_answers_bad_input_in_one_line(trained: Path, tmp_path: Path,
                                                       capsys: pytest.CaptureFixture) -> None:
    png = tmp_path / "x.png"
    assert main(["gan", "sample", str(trained), "--n", "4", "--class", "3",
                 "--out", str(png)]) == 0
    assert png.is_file()
    capsys.readouterr()
    cases = [
        (["gan", "sample", str(trained), "--class", "12", "--out", str(png)],
         "--class 12 is not a class of"),
        (["gan", "sample", str(tmp_path / "nowhere"), "--out", str(png)], "gan.json is missing"),
        (["gan", "train", "vae-shapes", "--out", str(tmp_path / "v")],
         "recipes/vae-shapes.toml is a VAE recipe: train it with `inkfuse vae train"),
        (["gan", "sample", str(trained), "--n", "0", "--out", str(png)],
         "--n must be at least 1"),
    ]
    for argv, message in cases:
        assert main(argv) == 1
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, err
