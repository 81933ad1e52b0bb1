"""Nothing lost, nothing silent: every bad recipe or failed run ends in one line naming the problem
and the fix, a non-zero exit and no traceback, and leaves nothing it created and nothing that
existed changed. The user paths go through the CLI (`inkfuse.cli.main`, or a real `inkfuse
train` process where a second process or a signal is the point)."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from inkfuse.artifacts import checkpoint
from inkfuse.artifacts.lock import locked
from inkfuse.cli import main
from inkfuse.config import load_recipe
from inkfuse.errors import CheckpointError
from inkfuse.train import train
from inkfuse.train.diffusion import DiffusionKind

pytestmark = pytest.mark.usefixtures("one_thread")

INKFUSE = [sys.executable, "-m", "inkfuse.cli"]  # the `inkfuse` command, in this venv
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def command(out: Path, sets: list[str]) -> list[str]:
    return ["train", "shapes", "--quiet", "--out", str(out),
            *[a for s in sets for a in ("--set", s)]]


def one_error_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("inkfuse: error:") and "Traceback" not in err, err
    return lines[0]


def same_weights(a: Path, b: Path) -> bool:
    for name in ("model", "ema", "trainer"):
        x, y = (load_file(str(run / "checkpoint" / f"{name}.safetensors")) for run in (a, b))
        if x.keys() != y.keys() or not all(torch.equal(x[k], y[k]) for k in x):
            return False
    return True


def log_steps(run_dir: Path) -> list[int]:
    return [json.loads(x)["step"] for x in (run_dir / "log.jsonl").read_text().splitlines()]


def wait_for(predicate, proc: subprocess.Popen, timeout: float = 240.0, poll: float = 0.02
             ) -> bool:
    """True once `predicate()` holds; False if `proc` ended first (or the time ran out)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        if proc.poll() is not None:
            return predicate()
        time.sleep(poll)
    return False


# ----------------------------------------------------------------------------- 1, 2: recipes


@pytest.mark.parametrize(("override", "message"), [
    ("train.ema_decay=nan", "train.ema_decay = nan is not a finite number; give a number in "
                            "[0.0, 1.0]"),
    ("train.lr=nan", "train.lr = nan is not a finite number"),
    ("model.channel_mult=[1,0,2]", "model.channel_mult = [1, 0, 2]: entry 1 is 0"),
    ("model.attention_resolutions=[3]",
     "model.attention_resolutions = [3]: the U-Net's levels are 16, 8, 4 px"),
])
def test_a_bad_recipe_value_is_one_line_and_writes_nothing(override, message, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(command(out, [override])) == 1
    assert message in one_error_line(capsys.readouterr().err)
    assert not out.exists()


@pytest.mark.parametrize(("override", "message"), [
    ("model.in_channels=1", "model.in_channels = 1 but the images have 3 channels; leave it at "
                            "0 to follow the data"),
    ("model.cond_dim=2", "model.cond_dim = 2 but the data has"),
    ("model.size=8", "model.size = 8 but pixel diffusion denoises the data.size = 16 images"),
])
def test_a_value_the_data_contradicts_is_refused_before_any_file(override, message, tmp_path,
                                                                 capsys, tiny_overrides):
    out = tmp_path / "run"
    assert main(command(out, [*tiny_overrides, override])) == 1
    assert message in one_error_line(capsys.readouterr().err)
    assert not out.exists()
    assert main(command(out, tiny_overrides)) == 0  # the corrected command is not refused
    capsys.readouterr()


# ----------------------------------------------------------------------------- 3: take back


def interrupt_first_step(monkeypatch: pytest.MonkeyPatch, error: BaseException) -> None:
    def fail(self, *args, **kwargs):
        raise error

    monkeypatch.setattr(DiffusionKind, "loss", fail)


def test_a_failed_first_step_leaves_nothing_and_the_fix_trains(tmp_path, capsys, monkeypatch,
                                                               tiny_overrides):
    out = tmp_path / "new" / "deeper" / "run"  # the parents the command made go too
    real_loss = DiffusionKind.loss
    interrupt_first_step(monkeypatch, KeyboardInterrupt())
    assert main(command(out, tiny_overrides)) == 130
    assert len(capsys.readouterr().err.strip().splitlines()) == 1
    assert not (tmp_path / "new").exists()

    # the NaN stop before any checkpoint: one line, and nothing kept
    monkeypatch.setattr(DiffusionKind, "loss", lambda self, *a, **k: (
        real_loss(self, *a, **k)[0] * float("nan"), {}))
    assert main(command(out, tiny_overrides)) == 1
    assert "loss became nan at step 0; no checkpoint yet" in one_error_line(
        capsys.readouterr().err)
    assert not (tmp_path / "new").exists()

    # a folder that was there stays, with only what it held
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    interrupt_first_step(monkeypatch, RuntimeError("boom"))
    with pytest.raises(RuntimeError, match="boom"):
        train(load_recipe("shapes", tiny_overrides), mine, progress=False)
    assert sorted(p.name for p in mine.iterdir()) == ["notes.txt"]
    monkeypatch.undo()

    # what a kill -9 before the first checkpoint leaves (config.json of another recipe, a log)
    # is no trained run: the corrected command starts it
    stale = load_recipe("shapes", [*tiny_overrides, "model.in_channels=1"]).to_dict()
    (mine / "config.json").write_text(json.dumps(stale))
    (mine / "log.jsonl").write_text('{"step": 1, "loss": 1.0}\n')
    assert main(command(mine, tiny_overrides)) == 0
    capsys.readouterr()
    assert json.loads((mine / "config.json").read_text())["model"]["in_channels"] == 3
    assert log_steps(mine) == [1, 2, 3, 4, 5, 6]
    assert (mine / "notes.txt").read_text() == "keep me"


def test_a_failure_after_a_checkpoint_keeps_the_run(tmp_path, tiny_overrides,
                                                    killed_after_checkpoint):
    config = load_recipe("shapes", tiny_overrides)
    killed_after_checkpoint(config, tmp_path / "run")  # right after the first checkpoint
    assert checkpoint.find(tmp_path / "run") is not None
    assert (tmp_path / "run" / "config.json").is_file()


def test_the_lock_is_taken_back_when_it_cannot_be_made(tmp_path):
    busy = tmp_path / "busy"
    with locked(busy), pytest.raises(CheckpointError, match=f"pid {os.getpid()}"), \
            locked(busy, keep=lambda: False):
        pass
    assert busy.is_dir()  # the refused second locker removed nothing of the holder's


# ----------------------------------------------------------------------------- 4, 5: processes


def test_a_second_trainer_is_refused_and_sigterm_keeps_the_checkpoint(tmp_path, tiny_overrides):
    out = tmp_path / "run"
    sets = [*tiny_overrides, "train.steps=100000", "train.checkpoint_every=2"]
    first = subprocess.Popen([*INKFUSE, *command(out, sets)],
                             env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert wait_for(lambda: checkpoint.find(out) is not None, first), first.communicate()
        second = subprocess.run([*INKFUSE, *command(out, sets)],
                                env=ENV, capture_output=True, text=True, timeout=300)
        assert second.returncode == 1
        line = one_error_line(second.stderr)
        assert f"is being written by another inkfuse process (pid {first.pid})" in line
        assert first.poll() is None  # the first trains on, its run dir intact
        assert (out / ".lock").read_text().strip() == str(first.pid)
        assert json.loads((out / "config.json").read_text())["train"]["steps"] == 100000
    finally:
        first.send_signal(signal.SIGTERM)
        _, err = first.communicate(timeout=120)
    assert first.returncode == 143, err  # SIGTERM unwinds as Ctrl-C does
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    ckpt = checkpoint.find(out)
    assert ckpt is not None and checkpoint.load_tensors(ckpt / "model.safetensors")


def test_sigterm_leaves_a_checkpoint_the_same_command_resumes_exactly(tmp_path, capsys,
                                                                      tiny_overrides):
    sets = [*tiny_overrides, "train.steps=24", "train.checkpoint_every=2"]
    straight = train(load_recipe("shapes", sets), tmp_path / "straight", progress=False)
    out = tmp_path / "run"
    proc = subprocess.Popen([*INKFUSE, *command(out, sets)],
                            env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert wait_for(lambda: checkpoint.find(out) is not None, proc)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err  # terminated, not finished
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    state = checkpoint.read_json(checkpoint.find(out) / "state.json")
    assert 2 <= state["step"] < 24
    for name in ("model", "ema", "trainer"):
        checkpoint.load_tensors(checkpoint.find(out) / f"{name}.safetensors")

    assert main(command(out, sets)) == 0  # the same command resumes
    capsys.readouterr()
    assert same_weights(straight, out)
    assert log_steps(out) == list(range(1, 25))


# ----------------------------------------------------------------------------- 6: kill -9


@pytest.mark.slow
def test_kill_9_at_random_points_resumes_to_identical_weights(tmp_path, capsys, tiny_overrides):
    sets = [*tiny_overrides, "train.steps=30", "train.checkpoint_every=2"]
    straight = train(load_recipe("shapes", sets), tmp_path / "straight", progress=False)
    out, rng = tmp_path / "run", random.Random(14)
    points = ["mid-checkpoint", "before the first checkpoint", "random", "random", "random"]
    for point in points:
        proc = subprocess.Popen([*INKFUSE, *command(out, sets)],
                                env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        if point == "mid-checkpoint":  # while checkpoint.tmp/ is being written
            wait_for(lambda: (out / checkpoint.TMP).is_dir(), proc, poll=0.001)
        elif point == "before the first checkpoint":
            wait_for(lambda: (out / "log.jsonl").is_file(), proc, poll=0.001)
        else:
            wait_for(lambda: (out / "log.jsonl").is_file(), proc)
            time.sleep(rng.uniform(0.0, 1.5))
        proc.kill()
        proc.wait(timeout=60)
        if proc.returncode == 0:  # it finished before the kill landed
            break
        assert proc.returncode == -signal.SIGKILL, proc.stderr.read()
    assert main(command(out, sets)) == 0
    capsys.readouterr()
    assert same_weights(straight, out)
    assert log_steps(out) == list(range(1, 31))
