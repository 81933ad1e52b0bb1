"""The one training loop, for each model kind: exact resume after a kill, the NaN stop with the
last good checkpoint kept, the time budget, torchrun; and its parts (LR, data order, seeds)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from inkfuse.config import TrainConfig, load_recipe
from inkfuse.errors import TrainingError
from inkfuse.train import loop, train
from inkfuse.train.clip import ClipKind
from inkfuse.train.diffusion import DiffusionKind
from inkfuse.train.vae import VAEKind

pytestmark = pytest.mark.usefixtures("one_thread")

TINY_VAE = ["data.size=16", "data.count=256", "vae.base_channels=8", "vae.groups=4",
            "vae.eval_count=16", "train.steps=6", "train.batch_size=16", "train.warmup_steps=2",
            "train.checkpoint_every=3", "train.log_every=1", "train.max_minutes=0"]
TINY_CLIP = ["data.size=8", "data.count=128", "clip.eval_count=16", "clip.channels=[8]",
             "clip.width=16", "clip.heads=2", "clip.layers=1", "clip.embed_dim=16",
             "clip.context_length=16", "train.steps=6", "train.batch_size=16",
             "train.warmup_steps=2", "train.checkpoint_every=3", "train.log_every=1"]
KINDS = {"diffusion": DiffusionKind, "vae": VAEKind, "clip": ClipKind}
FINAL = {"diffusion": None, "vae": "vae.safetensors", "clip": "clip.safetensors"}


def recipe(kind: str, tiny_overrides: list[str], *extra: str):
    """A few-second run of each kind, with every random draw and option its loop path has:
    dropout and flips (diffusion), flips and crops (VAE), an EMA and clipping (CLIP)."""
    if kind == "diffusion":
        return load_recipe("shapes", [*tiny_overrides, "model.dropout=0.1", "data.hflip=true",
                                      *extra])
    if kind == "vae":
        return load_recipe("vae-shapes", [*TINY_VAE, "data.hflip=true", "data.crop_padding=2",
                                          *extra])
    return load_recipe("clip-shapes", [*TINY_CLIP, "train.ema_decay=0.9",
                                       "train.grad_clip=1.0", *extra])


def log_steps(run_dir: Path) -> list[int]:
    return [json.loads(x)["step"] for x in (run_dir / "log.jsonl").read_text().splitlines()]


def same_tensors(a: Path, b: Path) -> bool:
    x, y = load_file(str(a)), load_file(str(b))
    return x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x)


@pytest.mark.parametrize("kind", list(KINDS))
def test_killed_run_resumes_to_identical_weights(kind, tmp_path, tiny_overrides,
                                                 killed_after_checkpoint):
    config = recipe(kind, tiny_overrides)
    straight = train(config, tmp_path / "straight", progress=False)

    killed_after_checkpoint(config, tmp_path / "resumed")  # right after the first checkpoint
    state = json.loads((tmp_path / "resumed/checkpoint/state.json").read_text())
    assert state["step"] == 3
    resumed = train(config, tmp_path / "resumed", progress=False)

    for which in ("model", "ema", "trainer"):
        name = f"checkpoint/{which}.safetensors"
        assert same_tensors(straight / name, resumed / name), which
    if FINAL[kind]:
        assert same_tensors(straight / FINAL[kind], resumed / FINAL[kind])
        meta = FINAL[kind].replace("safetensors", "json")
        metrics = [json.loads((run / meta).read_text())["metrics"] for run in (straight, resumed)]
        assert metrics[0] == metrics[1]
    assert log_steps(resumed) == [1, 2, 3, 4, 5, 6]


@pytest.mark.parametrize("kind", list(KINDS))
def test_non_finite_loss_stops_with_the_last_good_checkpoint(kind, tmp_path, tiny_overrides,
                                                             monkeypatch):
    cls = KINDS[kind]
    real_loss, calls = cls.loss, {"n": 0}

    def loss_that_explodes(self, *args, **kwargs):
        calls["n"] += 1
        loss, parts = real_loss(self, *args, **kwargs)
        return (loss * float("nan") if calls["n"] > 4 else loss), parts

    monkeypatch.setattr(cls, "loss", loss_that_explodes)
    with pytest.raises(TrainingError, match=r"loss became nan at step 4; the last good checkpoint"):
        train(recipe(kind, tiny_overrides), tmp_path / "run", progress=False)
    assert json.loads((tmp_path / "run/checkpoint/state.json").read_text())["step"] == 3


@pytest.mark.parametrize("kind", list(KINDS))
def test_time_budget_stops_cleanly_and_saves(kind, tmp_path, tiny_overrides):
    config = recipe(kind, tiny_overrides, "train.steps=1000", "train.max_minutes=1e-6")
    run = train(config, tmp_path / "run", progress=False)
    assert json.loads((run / "checkpoint/state.json").read_text())["step"] == 1
    if FINAL[kind]:  # a run out of time is scored and saved too
        meta = json.loads((run / FINAL[kind].replace("safetensors", "json")).read_text())
        assert meta["metrics"]["steps"] == 1


def test_cpu_clock_counts_this_process_cpu_time(tmp_path, tiny_overrides, monkeypatch):
    """train.clock = 'cpu': the budget and train_seconds follow time.process_time, so a process
    that waits (here: a clock that stands still while the wall clock runs) is not charged."""
    ticks = iter(range(0, 10_000, 7))  # process_time advances 7 s per reading
    monkeypatch.setattr(loop.time, "process_time", lambda: float(next(ticks)))
    config = recipe("diffusion", tiny_overrides, "train.steps=1000", "train.clock='cpu'",
                    "train.max_minutes=0.3")  # 18 s of CPU: three readings of 7 s
    run = train(config, tmp_path / "run", progress=False)
    state = json.loads((run / "checkpoint/state.json").read_text())
    assert state["step"] == 3 and state["train_seconds"] == 21.0


# A VAE and a CLIP trained under torchrun the way `inkfuse.train.train` is called
DDP_SCRIPT = ("import sys; from inkfuse.config import load_recipe; from inkfuse.train import "
              "train; train(load_recipe(sys.argv[1], sys.argv[3:]), sys.argv[2], progress=False)")


@pytest.mark.parametrize(("kind", "extra"), [
    ("diffusion", []), ("vae", []),
    ("clip", ["train.max_minutes=1e-6", "train.steps=1000"])])  # every rank stops at step 1
def test_every_kind_trains_under_torchrun_with_two_cpu_processes(kind, extra, tmp_path,
                                                                  tiny_overrides):
    out = tmp_path / "ddp"
    sets = [*{"diffusion": tiny_overrides, "vae": TINY_VAE, "clip": TINY_CLIP}[kind],
            "train.batch_size=8", *extra]
    if kind == "diffusion":
        args = ["-m", "inkfuse.cli", "train", "shapes", "--quiet", "--out", str(out),
                *[a for s in sets for a in ("--set", s)]]
    else:
        args = ["--no-python", sys.executable, "-c", DDP_SCRIPT, f"{kind}-shapes", str(out),
                *sets]
    port = 29533 + list(KINDS).index(kind)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
           f"--master_port={port}", *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    steps = 1 if extra else 6
    assert json.loads((out / "checkpoint/state.json").read_text())["step"] == steps
    assert log_steps(out) == list(range(1, steps + 1))  # one writer: rank 0
    if FINAL[kind]:
        assert (out / FINAL[kind]).is_file()


# ----------------------------------------------------------------------------- the parts


def test_lr_warms_up_then_follows_its_schedule():
    tc = TrainConfig(lr=1.0, steps=110, warmup_steps=10)
    assert [loop.lr_at(s, tc) for s in (0, 4, 9)] == [0.1, 0.5, 1.0]
    assert loop.lr_at(10, tc) == 1.0
    assert loop.lr_at(60, tc) == pytest.approx(0.1 + 0.9 * 0.5)  # half-way down the cosine
    assert loop.lr_at(110, tc) == pytest.approx(loop.LR_FLOOR)
    constant = TrainConfig(lr=1.0, steps=110, warmup_steps=10, lr_schedule="constant")
    assert loop.lr_at(5, constant) == 0.6 and loop.lr_at(100, constant) == 1.0


def test_batch_indices_split_the_global_batch_between_ranks():
    parts = [loop.batch_indices(100, 8, 5, 0, loop.Dist(r, 2)) for r in range(2)]
    whole = loop.batch_indices(100, 16, 5, 0, loop.Dist())
    assert sorted(torch.cat(parts).tolist()) == sorted(whole.tolist())
    epoch = torch.cat([loop.batch_indices(96, 16, i, 0, loop.Dist()) for i in range(6)])
    assert sorted(epoch.tolist()) == list(range(96))  # each image once per epoch


def test_seeds_differ_per_part_and_fit_a_generator():
    seeds = {loop.seed_for(0, r, s, k) for r in range(2) for s in range(50) for k in (1, 2)}
    assert len(seeds) == 200 and all(0 <= s < 2**63 for s in seeds)
    assert loop.seed_for(7, 1, 2) == loop.seed_for(7, 1, 2) != loop.seed_for(7, 2, 1)


def test_clip_decays_only_its_weight_matrices(tiny_overrides):
    kind = ClipKind(recipe("clip", tiny_overrides), Path("unused"), torch.device("cpu"),
                    loop.Dist(), False)
    model = kind.make_model()
    decay, rest = kind.param_groups(model)
    names = {id(p): n for n, p in model.named_parameters()}
    assert "logit_scale" in {names[id(p)] for p in rest["params"]}
    assert "text.position" in {names[id(p)] for p in rest["params"]}
    assert all(p.ndim >= 2 for p in decay["params"]) and rest["weight_decay"] == 0.0
    assert len(decay["params"]) + len(rest["params"]) == len(names)
    assert math.isfinite(kind.loss(model, kind.batch(torch.arange(4), torch.Generator()),
                                   torch.Generator())[0].item())
