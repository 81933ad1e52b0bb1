"""`train.eval_every`: scores of the EMA weights in memory written into log.jsonl and drawn
beside the loss, with the metric that fits the data, without touching the training (weights
bit-identical with it off, exact resume) or its time budget."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import load_file

from inkfuse import pipelines, viz
from inkfuse.artifacts.log import LOG, read_log
from inkfuse.config import load_recipe, replace
from inkfuse.errors import CheckpointError, ConfigError, TrainingError
from inkfuse.train import loop, scoring, train
from inkfuse.train.diffusion import DiffusionKind

pytestmark = pytest.mark.usefixtures("one_thread")

EVAL = ["train.eval_every=3", "train.eval_n=8"]


def records(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / LOG).read_text().splitlines()]


def same_tensors(a: Path, b: Path) -> bool:
    x, y = load_file(str(a)), load_file(str(b))
    return x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x)


@pytest.fixture(scope="module")
def eval_run(tmp_path_factory, tiny_overrides) -> Path:
    config = load_recipe("shapes", [*tiny_overrides, *EVAL])
    return train(config, tmp_path_factory.mktemp("eval") / "run", progress=False)


def test_scores_are_logged_before_the_loss_of_their_step(eval_run):
    log = records(eval_run)
    scored = [r for r in log if "eval" in r]
    assert [r["step"] for r in scored] == [3, 6]
    for r in scored:
        assert set(r["eval"]) == {"accuracy"} and 0 <= r["eval"]["accuracy"] <= 1
        assert r["eval_n"] == 8 and r["eval_seconds"] > 0
        after = log[log.index(r) + 1]
        assert after["step"] == r["step"] and "loss" in after  # the log still ends on a loss
    assert read_log(eval_run / LOG) == log  # every record fits the schema


def test_the_score_is_of_the_ema_weights_at_that_step(eval_run):
    run = pipelines.load_run(eval_run)
    expected = scoring.score(run, ["accuracy"], 8, scoring.eval_seed(run.config))
    assert next(r for r in records(eval_run) if "eval" in r and r["step"] == 6)["eval"] == expected


def test_weights_are_bit_identical_with_it_off(eval_run, tmp_path, tiny_overrides):
    plain = train(load_recipe("shapes", tiny_overrides), tmp_path / "plain", progress=False)
    for which in ("model", "ema", "trainer"):
        assert same_tensors(plain / f"checkpoint/{which}.safetensors",
                            eval_run / f"checkpoint/{which}.safetensors"), which
    losses = [(r["step"], r["loss"]) for r in records(plain)]
    assert losses == [(r["step"], r["loss"]) for r in records(eval_run) if "loss" in r]


def test_a_killed_run_resumes_to_the_same_weights_and_scores(eval_run, tmp_path, tiny_overrides,
                                                             killed_after_checkpoint):
    config = load_recipe("shapes", [*tiny_overrides, *EVAL])
    killed_after_checkpoint(config, tmp_path / "resumed")  # right after the first checkpoint
    resumed = train(config, tmp_path / "resumed", progress=False)
    for which in ("model", "ema"):
        assert same_tensors(eval_run / f"checkpoint/{which}.safetensors",
                            resumed / f"checkpoint/{which}.safetensors")
    assert ([(r["step"], r["eval"]) for r in records(resumed) if "eval" in r]
            == [(r["step"], r["eval"]) for r in records(eval_run) if "eval" in r])
    # the training time goes on from the checkpoint's, never back
    seconds = [r["train_seconds"] for r in records(resumed) if "loss" in r]
    assert seconds == sorted(seconds)
    state = json.loads((resumed / "checkpoint/state.json").read_text())
    assert state["train_seconds"] == seconds[-1]


def test_scoring_time_counts_neither_as_training_nor_towards_the_budget(
        tmp_path, tiny_overrides, monkeypatch):
    """A clock that only the scoring moves (100 s a score) against a 1-minute budget: counted,
    it would stop the run at step 4."""
    clock = {"now": 0.0}
    monkeypatch.setattr(loop, "time", SimpleNamespace(monotonic=lambda: clock["now"]))

    def slow_score(self, step, weights, metrics):
        clock["now"] += 100.0
        return {"accuracy": 0.5}

    monkeypatch.setattr(DiffusionKind, "score", slow_score)
    config = load_recipe("shapes", [*tiny_overrides, *EVAL, "train.max_minutes=1"])
    run_dir = train(config, tmp_path / "run", progress=False)
    log = records(run_dir)
    assert log[-1]["step"] == 6
    assert [r["eval_seconds"] for r in log if "eval" in r] == [100.0, 100.0]
    assert {r["train_seconds"] for r in log} == {0.0}


def test_mnist_is_scored_by_the_domain_classifier(tmp_path, shared_data):
    config = load_recipe("mnist", [
        "data.size=16", "data.limit=256", "model.base_channels=8", "model.channel_mult=[1, 2]",
        "model.groups=4", "train.steps=2", "train.batch_size=16", "train.warmup_steps=1",
        "train.max_minutes=0", "train.precision='fp32'", "train.checkpoint_every=2",
        "sample.steps=2", "sample.per_class=1", "diffusion.timesteps=20", "train.eval_every=2",
        "train.eval_n=10"])
    run_dir = train(config, tmp_path / "run", progress=False)
    (scored,) = [r for r in records(run_dir) if "eval" in r]
    assert set(scored["eval"]) == {"fd_cls", "accuracy"} and scored["eval"]["fd_cls"] > 0


def test_the_metric_fits_the_data(tiny_overrides):
    def metrics(*overrides: str) -> list[str]:
        config = load_recipe("shapes", [*tiny_overrides, *overrides])
        return scoring.metrics_for(replace(config, model={"cond_dim": 4}))

    assert metrics() == ["accuracy"]
    assert metrics("data.labels='none'") == ["fid"]
    for name, labels, expected in [("mnist", "class", ["fd_cls", "accuracy"]),
                                   ("fashion-mnist", "none", ["fd_cls"]),
                                   ("cifar10", "class", ["fid"])]:
        config = load_recipe("mnist", [f"data.name='{name}'", f"data.labels='{labels}'",
                                       "model.cond_dim=10" if labels == "class" else
                                       "model.cond_dim=0"])
        assert scoring.metrics_for(config) == expected, name
    assert scoring.better("accuracy", 0.9, 0.8) and scoring.better("fid", 10.0, 12.0)
    assert scoring.better("fd_cls", 3.0, None) and not scoring.better("fid", None, 1.0)


def test_what_cannot_be_scored_is_refused_before_training(tmp_path, tiny_overrides,
                                                          monkeypatch):
    with pytest.raises(ConfigError, match=r"train\.eval_every does not score super-resolution"):
        load_recipe("shapes-sr", ["train.eval_every=10"])
    monkeypatch.setenv("INKFUSE_FID_WEIGHTS", str(tmp_path / "missing.pt"))
    config = load_recipe("shapes", [*tiny_overrides, *EVAL, "data.labels='none'"])
    with pytest.raises(TrainingError, match=r"scoring with FID needs the Inception weights: "
                                            r".*missing\.pt.* do not exist"):
        train(config, tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()  # refused before anything was written
    vae = load_recipe("vae-shapes", ["train.eval_every=10"])
    with pytest.raises(TrainingError, match="scores samples of diffusion runs, not of a vae"):
        train(vae, tmp_path / "vae", progress=False)


def test_loss_plot_draws_one_panel_per_score(tmp_path, monkeypatch):
    figures = []
    monkeypatch.setattr(viz, "_save_figure", lambda fig, path: figures.append(fig))
    log = [{"step": s, "loss": 1 / s, "lr": 1e-3} for s in range(1, 21)]
    log += [{"step": 10, "eval": {"fd_cls": 30.0, "accuracy": None}},
            {"step": 20, "eval": {"fd_cls": 20.0, "accuracy": 0.7}}]
    viz.plot_loss(log, tmp_path / "loss.png")
    viz.plot_loss(log[:20], tmp_path / "plain.png")
    with_scores, plain = figures
    panels = [ax for ax in with_scores.axes if ax.get_ylabel() in ("fd_cls", "accuracy")]
    assert [ax.get_ylabel() for ax in panels] == ["fd_cls", "accuracy"]
    assert [list(ax.lines[0].get_xdata()) for ax in panels] == [[10, 20], [20]]  # null skipped
    assert not any(ax.get_ylabel() in ("fd_cls", "accuracy") for ax in plain.axes)


def test_a_damaged_score_record_is_one_line(tmp_path):
    path = tmp_path / LOG
    path.write_text('{"step": 1, "loss": 0.5}\n{"step": 2, "eval": {"fid": "abc"}}\n')
    with pytest.raises(CheckpointError, match=r"line 2\.eval\.fid is a string \('abc'\), not a "
                                              r"number or null; delete that line"):
        read_log(path)
    path.write_text('{"step": 2, "eval": {"fid": null}, "train_seconds": 1.5}\n')
    assert read_log(path)[0]["eval"] == {"fid": None}


def test_a_likelihood_can_score_too(eval_run):
    """`inkfuse ema --sweep --metric bpd`: the variational bound of held-out images."""
    run = pipelines.load_run(eval_run)
    result = scoring.score(run, ["bpd"], 4, 0)
    assert list(result) == ["bpd_vlb"] and result["bpd_vlb"] > 0
    assert scoring.better("bpd_vlb", 3.0, 4.0)
