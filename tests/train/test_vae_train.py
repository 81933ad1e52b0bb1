"""VAE training: it learns, saves and loads, refuses damage and other models; PSNR and SSIM.
(Exact resume, the NaN stop and torchrun: tests/train/test_loop.py, for every kind.)"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from inkfuse.artifacts.vae import load_vae
from inkfuse.cli.vae import add_vae_parser
from inkfuse.config import VAEConfig, load_recipe
from inkfuse.errors import CheckpointError, ConfigError, DataError, InkfuseError
from inkfuse.metrics.image_quality import psnr, ssim
from inkfuse.nn.vae import AutoencoderKL
from inkfuse.train import train
from inkfuse.train.vae import ClassifierDistance, evaluate_vae, resolve, vae_datasets

TINY = {
    "data": {"name": "shapes", "size": 16, "count": 512},
    "vae": {"base_channels": 8, "groups": 4, "eval_count": 64},
    "train": {"steps": 80, "batch_size": 16, "lr": 3e-3, "warmup_steps": 5,
              "checkpoint_every": 40, "log_every": 1},
}


def tiny(**sections: dict) -> VAEConfig:
    return VAEConfig.from_dict({name: {**table, **sections.get(name, {})}
                                for name, table in TINY.items()})


def train_vae(config: VAEConfig, out: Path) -> dict:
    """Train, then the metrics that vae.json holds."""
    return json.loads((train(config, out, progress=False) / "vae.json").read_text())["metrics"]


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def run(one_thread: None, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """80 steps of batch 16 at 16 px, a 3-level VAE of 8-32 channels: a few seconds."""
    out = tmp_path_factory.mktemp("vae")
    return out, train_vae(tiny(), out)


# ----------------------------------------------------------------------------- training


def test_reconstruction_improves(run: tuple[Path, dict]) -> None:
    out, metrics = run
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == list(range(1, 81))
    first, last = np.mean([r["recon"] for r in log[:5]]), np.mean([r["recon"] for r in log[-5:]])
    assert last < 0.6 * first

    cfg = tiny()
    data, held = vae_datasets(cfg)
    torch.manual_seed(0)
    untrained = AutoencoderKL(resolve(cfg, 3), 16).eval()
    before = evaluate_vae(untrained, held.images, data.images)
    assert metrics["psnr"] > before["psnr"] + 3  # measured about 9 dB -> 17 dB
    assert metrics["ssim"] > before["ssim"]


def test_run_dir_and_round_trip(run: tuple[Path, dict]) -> None:
    out, metrics = run
    assert {"vae.safetensors", "vae.json", "reconstructions.png", "log.jsonl",
            "checkpoint"} <= {p.name for p in out.iterdir()}
    meta = json.loads((out / "vae.json").read_text())
    assert meta["metrics"] == metrics
    assert metrics["latent_shape"] == [4, 4, 4] and metrics["steps"] == 80
    assert math.isfinite(metrics["scale_factor"]) and metrics["scale_factor"] > 0
    vae = load_vae(out)
    assert not vae.training and vae.image_size == 16
    assert vae.scale_factor.item() == pytest.approx(metrics["scale_factor"])
    data, held = vae_datasets(VAEConfig.from_dict(meta["config"]))
    again = evaluate_vae(vae, held.images, data.images)
    assert again["psnr"] == pytest.approx(metrics["psnr"], rel=1e-5)


def test_resume_refuses_another_architecture(run: tuple[Path, dict]) -> None:
    out, _ = run
    with pytest.raises(CheckpointError, match=r"vae\.latent_channels = 4, not 8"):
        train(tiny(vae={"latent_channels": 8}), out, progress=False)


# ----------------------------------------------------------------------------- load errors


def copy_run(src: Path, dst: Path) -> Path:
    dst.mkdir()
    for name in ("vae.json", "vae.safetensors"):
        (dst / name).write_bytes((src / name).read_bytes())
    return dst


def test_load_errors(run: tuple[Path, dict], tmp_path: Path) -> None:
    out, _ = run
    with pytest.raises(CheckpointError, match=r"vae\.json is missing"):
        load_vae(tmp_path / "nowhere")

    truncated = copy_run(out, tmp_path / "truncated")
    data = (truncated / "vae.safetensors").read_bytes()
    (truncated / "vae.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        load_vae(truncated)

    other = copy_run(out, tmp_path / "other")
    meta = json.loads((other / "vae.json").read_text())
    meta["model"]["base_channels"] = 16  # another architecture beside the same weights
    (other / "vae.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="different model"):
        load_vae(other)

    meta["format"] = "something-else"
    (other / "vae.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="not an inkfuse VAE"):
        load_vae(other)

    (other / "vae.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="damaged"):
        load_vae(other)

    unfinished = tmp_path / "unfinished"
    (unfinished / "checkpoint").mkdir(parents=True)
    (unfinished / "checkpoint" / "state.json").write_text("{}")
    with pytest.raises(CheckpointError, match="no finished model"):
        load_vae(unfinished)


# ----------------------------------------------------------------------------- config


def test_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"unknown key train\.stepz"):
        VAEConfig.from_dict({"train": {"stepz": 3}})
    with pytest.raises(ConfigError, match=r"unknown key vae\.stepz"):
        load_recipe("vae-shapes", ["vae.stepz=3"])
    with pytest.raises(ConfigError, match=r"shapes\.toml is a diffusion recipe: train it with "
                                          r"`inkfuse train shapes`"):
        load_recipe("shapes", kind="vae")
    with pytest.raises(ConfigError, match=r"divisible by vae\.down_factor = 8"):
        VAEConfig.from_dict({"data": {"size": 28}, "vae": {"down_factor": 8}})
    with pytest.raises(ConfigError, match="needs channel_mult with 4 entries"):
        VAEConfig.from_dict({"vae": {"down_factor": 8, "channel_mult": [1, 2, 2]}})
    with pytest.raises(ConfigError, match="1-channel"):
        train(tiny(vae={"perceptual_weight": 1.0}), tmp_path / "never-written", progress=False)
    assert not (tmp_path / "never-written").exists()


@pytest.mark.parametrize(("recipe", "latents"), [("vae-shapes", [4, 16, 16]),
                                                 ("vae-fashion-mnist", [4, 8, 8])])
def test_recipes_describe_their_latents(recipe: str, latents: list[int]) -> None:
    cfg = load_recipe(recipe, kind="vae")
    side = (cfg.data.size + 2 * cfg.vae.pad) // cfg.vae.down_factor
    assert [cfg.vae.latent_channels, side, side] == latents


def test_fashion_mnist_with_the_perceptual_term(shared_data: Path, tmp_path: Path) -> None:
    cfg = load_recipe("vae-fashion-mnist", [
        "data.limit=64", "vae.base_channels=8", "train.steps=2", "train.batch_size=8",
        "vae.eval_count=16", "vae.perceptual_weight=0.1", "train.max_minutes=0"])
    metrics = train_vae(cfg, tmp_path / "fm")
    assert metrics["latent_shape"] == [4, 8, 8] and math.isfinite(metrics["psnr"])
    log = json.loads((tmp_path / "fm" / "log.jsonl").read_text().splitlines()[-1])
    assert log["perceptual"] > 0


def test_classifier_distance() -> None:
    dist = ClassifierDistance("fashion-mnist")
    x = torch.rand(4, 1, 28, 28) * 2 - 1
    y = x.clone().requires_grad_(True)
    assert dist(x, y).item() == pytest.approx(0.0, abs=1e-6)
    big = torch.rand(4, 1, 32, 32) * 2 - 1
    rec = (torch.rand(4, 1, 32, 32) * 2 - 1).requires_grad_(True)
    d = dist(big, rec)  # both resized to 28
    assert d.item() > 0
    d.backward()
    assert rec.grad is not None and rec.grad.abs().sum() > 0
    assert all(p.grad is None for p in dist.parameters())  # frozen


# ----------------------------------------------------------------------------- CLI


def cli(*argv: str) -> None:
    parser = argparse.ArgumentParser(prog="inkfuse")
    add_vae_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(list(argv))
    args.fn(args)


def test_cli_encode_decode(run: tuple[Path, dict], tmp_path: Path) -> None:
    from PIL import Image

    out, _ = run
    Image.fromarray(np.full((40, 30, 3), 200, np.uint8)).save(tmp_path / "a.jpg")
    np.savez(tmp_path / "s.npz", images=np.zeros((2, 16, 16, 1), np.uint8))
    cli("vae", "encode", str(out), "--image", str(tmp_path / "a.jpg"),
        "--image", str(tmp_path / "s.npz"), "--out", str(tmp_path / "z.safetensors"))
    latents = load_file(str(tmp_path / "z.safetensors"))["latents"]
    assert latents.shape == (3, 4, 4, 4)
    cli("vae", "decode", str(out), "--latents", str(tmp_path / "z.safetensors"),
        "--out", str(tmp_path / "x.npz"))
    images = np.load(tmp_path / "x.npz")["images"]
    assert images.shape == (3, 16, 16, 3) and images.dtype == np.uint8
    cli("vae", "decode", str(out), "--latents", str(tmp_path / "z.safetensors"),
        "--out", str(tmp_path / "x.png"))
    assert Image.open(tmp_path / "x.png").size == (3 * 16 + 4 * 2, 16 + 2 * 2)


def test_cli_errors_are_one_line(run: tuple[Path, dict], tmp_path: Path) -> None:
    out, _ = run
    (tmp_path / "bad.safetensors").write_bytes(b"not a tensor file")
    cases = [
        (DataError, ["encode", str(out), "--image", str(tmp_path / "no.png"),
                     "--out", str(tmp_path / "z.safetensors")]),
        (DataError, ["encode", str(out), "--image", str(out / "vae.json"),
                     "--out", str(tmp_path / "z.safetensors")]),
        (ConfigError, ["encode", str(out), "--image", "a.png", "--out", str(tmp_path / "z.pt")]),
        (DataError, ["decode", str(out), "--latents", str(tmp_path / "bad.safetensors"),
                     "--out", str(tmp_path / "x.png")]),
        (CheckpointError, ["decode", str(tmp_path), "--latents", "z.safetensors",
                           "--out", str(tmp_path / "x.png")]),
    ]
    for error, argv in cases:
        with pytest.raises(error) as info:
            cli("vae", *argv)
        assert isinstance(info.value, InkfuseError) and "\n" not in str(info.value)


# ----------------------------------------------------------------------------- PSNR / SSIM


def test_psnr_known_values() -> None:
    a = torch.zeros(2, 3, 16, 16)
    assert psnr(a, a).tolist() == [math.inf, math.inf]
    assert psnr(a[0], a[0] + 0.1).item() == pytest.approx(20.0)  # MSE 0.01 -> 20 dB
    b = a.clone()
    b[1] += 0.5
    assert psnr(a, b)[1].item() == pytest.approx(10 * math.log10(4))


def test_ssim_known_values() -> None:
    x = torch.rand(2, 3, 16, 16)
    assert torch.allclose(ssim(x, x), torch.ones(2, dtype=torch.float64))
    # constant images 0.2 and 0.6: no variance, so SSIM = (2 mu_a mu_b + C1) /
    # (mu_a^2 + mu_b^2 + C1) with C1 = 0.01^2: 0.2401 / 0.4001
    a = torch.full((1, 12, 12), 0.2, dtype=torch.float64)
    b = torch.full((1, 12, 12), 0.6, dtype=torch.float64)
    assert ssim(a, b).item() == pytest.approx(0.2401 / 0.4001, rel=1e-9)
    # a ramp against its square; skimage.metrics.structural_similarity(gaussian_weights=True,
    # sigma=1.5, use_sample_covariance=False, data_range=1) gives 0.788321027
    y, x = torch.meshgrid(torch.arange(16.0), torch.arange(16.0), indexing="ij")
    ramp = ((x + y) / 30)[None]
    assert ssim(ramp, ramp**2).item() == pytest.approx(0.788321027, abs=1e-7)
    assert ssim(ramp, ramp**2).item() == pytest.approx(ssim(ramp**2, ramp).item())
    with pytest.raises(ValueError, match="at least 11"):
        ssim(torch.zeros(1, 8, 8), torch.zeros(1, 8, 8))
