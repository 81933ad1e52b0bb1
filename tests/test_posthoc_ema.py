"""Post-hoc EMA (Karras et al. 2024, EDM2): the power-function EMA and its γ ↔ σ_rel map against
closed forms, the least-squares reconstruction (exact for a stored width, close for one between
them), the snapshots a run writes and resumes bit-identically, and `inkfuse ema`."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from inkfuse import pipelines
from inkfuse.artifacts import ema as snapshots
from inkfuse.cli import main
from inkfuse.config import load_recipe
from inkfuse.errors import CheckpointError, ConfigError
from inkfuse.train import posthoc_ema, train
from inkfuse.train.ema import (
    PowerEMA,
    combine,
    gamma_to_sigma_rel,
    posthoc_coefficients,
    power_beta,
    profile_inner_product,
    sigma_rel_to_gamma,
)

pytestmark = pytest.mark.usefixtures("one_thread")


# --- the math ----------------------------------------------------------------------------------


def test_sigma_rel_and_gamma_follow_eq_3():
    assert gamma_to_sigma_rel(0.0) == pytest.approx(math.sqrt(1 / 12))  # 1 / (4 · 3)
    assert gamma_to_sigma_rel(1.0) == pytest.approx(math.sqrt(2 / 36))  # 2 / (3² · 4)
    # EDM2 keeps σ_rel 0.05 and 0.10 as γ = 16.97 and 6.94 (Sec. 3.1)
    assert sigma_rel_to_gamma(0.05) == pytest.approx(16.97, abs=0.005)
    assert sigma_rel_to_gamma(0.10) == pytest.approx(6.94, abs=0.005)
    for sigma_rel in (0.01, 0.07, 0.2, 0.28):
        assert gamma_to_sigma_rel(sigma_rel_to_gamma(sigma_rel)) == pytest.approx(sigma_rel)
    for bad in (0.0, 0.29, -0.1):
        with pytest.raises(ConfigError, match="outside"):
            sigma_rel_to_gamma(bad)


def test_power_ema_is_the_discrete_power_profile():
    """After t updates θ̂ = Σ_τ w_τ θ_τ with w_τ = (1 − β(τ)) Π_{s>τ} β(s) = (1 − (1 − 1/τ)^(γ+1))
    (τ/t)^(γ+1): the telescoping product of β(s) = ((s − 1)/s)^(γ+1)."""
    net = nn.Linear(1, 1, bias=False)
    power = PowerEMA(net, 0.1)
    gamma, t = power.gamma, 50
    thetas = torch.linspace(-1, 2, t) ** 2
    for step, theta in enumerate(thetas):
        with torch.no_grad():
            net.weight.fill_(theta)
        power.update(net, step)
    tau = torch.arange(1, t + 1, dtype=torch.float64)
    w = (1 - (1 - 1 / tau) ** (gamma + 1)) * (tau / t) ** (gamma + 1)
    assert w.sum().item() == pytest.approx(1.0)
    assert power.shadow["weight"].item() == pytest.approx((w * thetas.double()).sum().item(),
                                                          rel=1e-5)
    assert power_beta(gamma, 1) == 0.0  # the first update takes the weights as they are


def test_profile_inner_products_by_hand():
    # flat profiles (γ = 0) 1/t_a and 1/t_b overlap on [0, min]: min / (t_a t_b) = 1 / max
    assert profile_inner_product(3.0, 0.0, 5.0, 0.0) == pytest.approx(1 / 5)
    # 2τ on [0, 1] against 1/2 on [0, 2]: ∫_0^1 τ dτ = 1/2, in either order
    assert profile_inner_product(1.0, 1.0, 2.0, 0.0) == pytest.approx(0.5)
    assert profile_inner_product(2.0, 0.0, 1.0, 1.0) == pytest.approx(0.5)
    # against a midpoint sum of the integral
    ta, ga, tb, gb = 700.0, 6.94, 1000.0, 16.97
    tau = (np.arange(200_000) + 0.5) * (ta / 200_000)
    pa = (ga + 1) * tau**ga / ta ** (ga + 1)
    pb = (gb + 1) * tau**gb / tb ** (gb + 1)
    assert profile_inner_product(ta, ga, tb, gb) == pytest.approx((pa * pb).sum() * ta / 200_000,
                                                                  rel=1e-6)


def test_a_stored_width_is_reconstructed_exactly():
    basis = [(s, g) for s in (100, 200, 300, 400) for g in (16.97, 6.94)]
    for j, target in enumerate(basis):
        x = posthoc_coefficients(basis, target)
        assert x.sum() == pytest.approx(1.0)
        assert np.allclose(x, np.eye(len(basis))[j], atol=1e-9)


def test_combine_sums_state_dicts_in_their_dtypes():
    a = {"w": torch.tensor([1.0, 2.0]), "n": torch.tensor(3)}
    b = {"w": torch.tensor([3.0, -2.0]), "n": torch.tensor(4)}
    x = np.array([[0.25, 1.0], [0.75, 0.0]])
    first, second = combine(iter([a, b]), x)
    assert torch.equal(first["w"], torch.tensor([2.5, -1.0])) and first["w"].dtype == torch.float32
    assert torch.equal(second["w"], a["w"])
    assert first["n"].item() == 4 and second["n"].item() == 4  # counters: the last one's


def test_an_intermediate_width_matches_its_direct_power_ema():
    """A synthetic run of 2000 steps of a drifting, noisy weight vector, with the EMAs of σ_rel
    0.05 and 0.10 snapshotted every 100 steps: the reconstruction of 0.07 at the end matches an
    EMA of 0.07 kept all along to within 1% of the gap between the two stored ones."""
    torch.manual_seed(0)
    net = nn.Linear(64, 1, bias=False)
    freq, phase = torch.rand(64) * 4 + 0.5, torch.rand(64) * 6.28
    kept = {s: PowerEMA(net, s) for s in (0.05, 0.10, 0.07)}
    basis, weights = [], []
    for step in range(2000):
        with torch.no_grad():
            drift = torch.sin(freq * (step + 1) / 2000 * 6.28 + phase)
            net.weight.copy_((drift + 0.3 * torch.randn(64))[None])
        for power in kept.values():
            power.update(net, step)
        if (step + 1) % 100 == 0:
            for s in (0.05, 0.10):
                basis.append((step + 1, kept[s].gamma))
                weights.append({k: v.clone() for k, v in kept[s].state_dict().items()})
    x = posthoc_coefficients(basis, (2000, kept[0.07].gamma))
    (rebuilt,) = combine(iter(weights), x[:, None])
    gap = (kept[0.05].shadow["weight"] - kept[0.10].shadow["weight"]).abs().mean()
    error = (rebuilt["weight"] - kept[0.07].shadow["weight"]).abs().max()
    assert error < 0.01 * gap, (error, gap)


# --- a run's snapshots ---------------------------------------------------------------------------

SNAP = ["train.ema_snapshots_every=2"]


def same_tensors(a: Path, b: Path) -> bool:
    x, y = load_file(str(a)), load_file(str(b))
    return x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x)


@pytest.fixture(scope="module")
def snap_run(tmp_path_factory, tiny_overrides) -> Path:
    """A 6-step tiny run with snapshots at steps 2, 4, 6."""
    config = load_recipe("shapes", [*tiny_overrides, *SNAP])
    return train(config, tmp_path_factory.mktemp("snap") / "run", progress=False)


def test_a_run_keeps_snapshots_and_its_weights_are_unchanged(snap_run, tmp_path, tiny_overrides):
    found = snapshots.read_snapshots(snap_run)
    assert [(s.step, s.sigma_rel) for s in found] == [
        (step, r) for step in (2, 4, 6) for r in (0.05, 0.1)]
    for r in (0.05, 0.1):  # the last snapshot is the checkpoint's running average
        assert same_tensors(snap_run / f"ema_snapshots/0000006-{r:g}.safetensors",
                            snap_run / f"checkpoint/power-ema-{r:g}.safetensors")
    plain = train(load_recipe("shapes", tiny_overrides), tmp_path / "plain", progress=False)
    for which in ("model", "ema"):  # the golden digests cannot move
        assert same_tensors(plain / f"checkpoint/{which}.safetensors",
                            snap_run / f"checkpoint/{which}.safetensors")


def test_reconstructing_a_stored_width_gives_its_snapshot(snap_run):
    expected = load_file(str(snap_run / "checkpoint/ema.safetensors"))
    end, (rebuilt,) = posthoc_ema.reconstruct(snap_run, [0.1], expected)
    stored = load_file(str(snap_run / "ema_snapshots/0000006-0.1.safetensors"))
    assert end == 6
    for name, value in stored.items():
        assert torch.allclose(rebuilt[name], value, rtol=1e-6, atol=1e-7), name


def test_a_killed_run_resumes_to_identical_snapshots(tmp_path, tiny_overrides,
                                                     killed_after_checkpoint):
    config = load_recipe("shapes", [*tiny_overrides, "train.ema_snapshots_every=1"])
    straight = train(config, tmp_path / "straight", progress=False)
    killed_after_checkpoint(config, tmp_path / "resumed")  # right after the first checkpoint
    # a snapshot written past the checkpoint (a kill between the two) is dropped and rewritten
    ahead = snapshots.Snapshot(5, 0.05, sigma_rel_to_gamma(0.05))
    snapshots.save_snapshot(tmp_path / "resumed", ahead, {"junk": torch.zeros(1)})
    resumed = train(config, tmp_path / "resumed", progress=False)
    names = sorted(p.name for p in (straight / "ema_snapshots").iterdir())
    assert names == sorted(p.name for p in (resumed / "ema_snapshots").iterdir())
    for name in names:
        if name.endswith(".safetensors"):
            assert same_tensors(straight / "ema_snapshots" / name,
                                resumed / "ema_snapshots" / name), name
    for which in ("model", "ema", "power-ema-0.05", "power-ema-0.1"):
        assert same_tensors(straight / f"checkpoint/{which}.safetensors",
                            resumed / f"checkpoint/{which}.safetensors"), which


def test_resuming_with_snapshots_turned_on_is_one_line(tmp_path, tiny_overrides):
    run_dir = train(load_recipe("shapes", [*tiny_overrides, "train.steps=3"]), tmp_path / "run",
                    progress=False)
    config = load_recipe("shapes", [*tiny_overrides, *SNAP])
    with pytest.raises(CheckpointError, match=r"holds no post-hoc EMA of sigma_rel 0\.05"):
        train(config, run_dir, progress=False)


@pytest.mark.parametrize(("override", "message"), [
    ("train.ema_sigma_rels=[0.05, 0.3]", r"0\.3 is outside \(0, 0\.2887\)"),
    ("train.ema_sigma_rels=[0.05]", "at least two different widths"),
    ("train.ema_sigma_rels=[0.05, 0.05]", "at least two different widths"),
])
def test_bad_widths_are_refused_by_the_recipe(override, message):
    with pytest.raises(ConfigError, match=message):
        load_recipe("shapes", [*SNAP, override])


# --- inkfuse ema ---------------------------------------------------------------------------------


def test_sweep_prints_a_table_and_save_restore_swap_the_ema(snap_run, tmp_path, capsys):
    import shutil

    run_dir = tmp_path / "run"
    shutil.copytree(snap_run, run_dir)
    original = (run_dir / "checkpoint/ema.safetensors").read_bytes()
    out = tmp_path / "sweep.json"
    assert main(["ema", str(run_dir), "--sweep", "--sigma-rels", "0.05,0.08", "--n", "8",
                 "--best", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "6 snapshots of sigma_rel 0.05, 0.1, up to step 6" in text
    assert "accuracy of 8 samples (ddim, 3 steps" in text
    lines = [ln.split() for ln in text.splitlines()]
    assert lines[3][:5] == ["recipe", "(decay", "0.995)", "-", "-"]
    assert [ln[:3] for ln in lines[4:6]] == [["post-hoc", "0.050", "16.97"],
                                             ["post-hoc", "0.080", "9.45"]]
    rows = json.loads(out.read_text())["rows"]
    assert [r["sigma_rel"] for r in rows] == [None, 0.05, 0.08]
    assert all(0 <= r["accuracy"] <= 1 for r in rows)
    best = posthoc_ema.best(rows, "accuracy")["sigma_rel"]
    assert f"wrote the sigma_rel {best:g} EMA at step 6" in text

    # the saved reconstruction is what sampling loads; the recipe's is kept and comes back
    expected = load_file(str(snap_run / "checkpoint/ema.safetensors"))
    _, (rebuilt,) = posthoc_ema.reconstruct(run_dir, [best], expected)
    run = pipelines.load_run(run_dir)
    assert all(torch.equal(v, rebuilt[k]) for k, v in run.net.state_dict().items())
    assert (run_dir / "ema_snapshots" / snapshots.ORIGINAL).read_bytes() == original
    assert snapshots.saved_reconstruction(run_dir) == {"sigma_rel": best, "step": 6}
    assert main(["ema", str(run_dir), "--restore"]) == 0
    assert (run_dir / "checkpoint/ema.safetensors").read_bytes() == original
    assert snapshots.saved_reconstruction(run_dir) is None
    assert not (run_dir / "ema_snapshots" / snapshots.ORIGINAL).exists()


def test_training_on_after_save_resumes_from_the_recipes_ema(tmp_path, tiny_overrides,
                                                             killed_after_checkpoint):
    config = load_recipe("shapes", [*tiny_overrides, "train.ema_snapshots_every=1"])
    straight = train(config, tmp_path / "straight", progress=False)
    killed_after_checkpoint(config, tmp_path / "resumed")  # right after the first checkpoint
    expected = load_file(str(tmp_path / "resumed/checkpoint/ema.safetensors"))
    posthoc_ema.save(tmp_path / "resumed", 0.07, expected)  # a reconstruction at step 3
    resumed = train(config, tmp_path / "resumed", progress=False)
    assert same_tensors(straight / "checkpoint/ema.safetensors",
                        resumed / "checkpoint/ema.safetensors")
    assert snapshots.saved_reconstruction(resumed) is None


def test_ema_command_mistakes_are_one_line(tmp_path, tiny_overrides, capsys):
    run_dir = train(load_recipe("shapes", [*tiny_overrides, "train.steps=3"]), tmp_path / "run",
                    progress=False)
    for argv, message in [
        (["--sweep"], "0 post-hoc EMA snapshots, too few to reconstruct from: train it with "
                      "--set train.ema_snapshots_every=N"),
        (["--best"], "--best chooses from a sweep: add --sweep"),
        (["--restore", "--sweep"], "--restore puts the recipe's EMA back: give it alone"),
        (["--n", "8"], "set up a sweep: add --sweep"),
        (["--sweep", "--sigma-rels", "0.3"], "--sigma-rels must be in (0, 0.288675]"),
        (["--restore"], "has no original EMA put aside"),
    ]:
        assert main(["ema", str(run_dir), *argv]) == 1, argv
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1, (argv, err)
