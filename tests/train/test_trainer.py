import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from inkfuse.config import load_recipe
from inkfuse.errors import CheckpointError, TrainingError
from inkfuse.train import checkpoint, trainer


def weights(run_dir: Path, which: str = "model") -> dict:
    return load_file(str(run_dir / "checkpoint" / f"{which}.safetensors"))


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


def test_killed_run_resumes_to_identical_weights(tmp_path, tiny_overrides, monkeypatch):
    config = load_recipe("shapes", [*tiny_overrides, "model.dropout=0.1", "data.hflip=true"])
    straight = trainer.train(config, tmp_path / "straight", progress=False)

    real_save = checkpoint.save

    def save_then_die(*args, **kwargs):
        real_save(*args, **kwargs)
        raise KeyboardInterrupt  # killed right after the step-3 checkpoint

    monkeypatch.setattr(checkpoint, "save", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        trainer.train(config, tmp_path / "resumed", progress=False)
    monkeypatch.setattr(checkpoint, "save", real_save)
    assert json.loads((tmp_path / "resumed/checkpoint/state.json").read_text())["step"] == 3
    resumed = trainer.train(config, tmp_path / "resumed", progress=False)

    for which in ("model", "ema"):
        a, b = weights(straight, which), weights(resumed, which)
        assert all(torch.equal(a[k], b[k]) for k in a), which
    log = [json.loads(x)["step"] for x in (resumed / "log.jsonl").read_text().splitlines()]
    assert log == [1, 2, 3, 4, 5, 6]


def test_half_swapped_checkpoint_falls_back_to_the_old_one(tmp_path, tiny_overrides):
    run = trainer.train(load_recipe("shapes", tiny_overrides), tmp_path / "run", progress=False)
    os.replace(run / "checkpoint", run / "checkpoint.old")  # a crash between the two renames
    assert checkpoint.find(run) == run / "checkpoint.old"
    from inkfuse.pipelines import load_run

    assert load_run(run).net is not None


def test_non_finite_loss_stops_with_a_clear_message(tmp_path, tiny_overrides, monkeypatch):
    real_loss = trainer.diffusion_loss
    calls = {"n": 0}

    def loss_that_explodes(*args, **kwargs):
        calls["n"] += 1
        out = real_loss(*args, **kwargs)
        return out * float("nan") if calls["n"] > 4 else out

    monkeypatch.setattr(trainer, "diffusion_loss", loss_that_explodes)
    with pytest.raises(TrainingError, match=r"loss became nan at step 4; the last good checkpoint"):
        trainer.train(load_recipe("shapes", tiny_overrides), tmp_path / "run", progress=False)
    assert json.loads((tmp_path / "run/checkpoint/state.json").read_text())["step"] == 3


def test_time_budget_stops_cleanly_with_a_checkpoint(tmp_path, tiny_overrides):
    config = load_recipe("shapes", [*tiny_overrides, "train.steps=1000", "train.max_minutes=1e-6"])
    run = trainer.train(config, tmp_path / "run", progress=False)
    assert json.loads((run / "checkpoint/state.json").read_text())["step"] == 1


def test_resume_refuses_a_different_model(tmp_path, tiny_overrides):
    trainer.train(load_recipe("shapes", tiny_overrides), tmp_path / "run", progress=False)
    other = load_recipe("shapes", [*tiny_overrides, "model.base_channels=16"])
    with pytest.raises(CheckpointError, match=r"model\.base_channels = 8, not 16"):
        trainer.train(other, tmp_path / "run", progress=False)


def test_bf16_loss_tracks_fp32(tiny_overrides):
    config = load_recipe("shapes", tiny_overrides)
    data = trainer.build_dataset(config.data, seed=0)
    config = trainer.resolve(config, data)
    from inkfuse.diffusion import Schedule, diffusion_loss
    from inkfuse.nn import build_model

    torch.manual_seed(0)
    net = build_model(config.model, 16, 50)
    x0 = data.to_float(slice(0, 32))
    losses = {}
    for precision in ("fp32", "bf16"):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
            g = torch.Generator().manual_seed(1)
            losses[precision] = diffusion_loss(net, Schedule("cosine", 50), x0, None, generator=g)
    assert losses["bf16"].item() == pytest.approx(losses["fp32"].item(), rel=0.05)


def test_ddp_with_two_cpu_processes(tmp_path, tiny_overrides):
    sets = [a for o in tiny_overrides for a in ("--set", o)]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
           "--master_port=29533", "-m", "inkfuse.cli", "train", "shapes", "--quiet",
           "--out", str(tmp_path / "ddp"), *sets, "--set", "train.batch_size=8"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    state = json.loads((tmp_path / "ddp/checkpoint/state.json").read_text())
    assert state["step"] == 6
    steps = [json.loads(x)["step"] for x in (tmp_path / "ddp/log.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4, 5, 6]  # one writer: rank 0


def test_batch_indices_split_the_global_batch_between_ranks():
    parts = [trainer.batch_indices(100, 8, 5, 0, trainer.Dist(r, 2)) for r in range(2)]
    whole = trainer.batch_indices(100, 16, 5, 0, trainer.Dist())
    assert sorted(torch.cat(parts).tolist()) == sorted(whole.tolist())
    epoch = torch.cat([trainer.batch_indices(96, 16, i, 0, trainer.Dist()) for i in range(6)])
    assert sorted(epoch.tolist()) == list(range(96))  # each image once per epoch
