"""benchmarks/families.py: its scoring helpers against hand-computed values, its one-line
answers to bad input, and (slow) a tiny end-to-end run of the three families."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "families.py"
spec = importlib.util.spec_from_file_location("families", SCRIPT)
families = importlib.util.module_from_spec(spec)
spec.loader.exec_module(families)


def test_effective_classes() -> None:
    assert families.effective_classes(torch.zeros(50, dtype=torch.long)) == pytest.approx(1.0)
    assert families.effective_classes(torch.arange(50) % 10) == pytest.approx(10.0)
    two = torch.tensor([0, 0, 3, 3])  # two classes, equally often
    assert families.effective_classes(two) == pytest.approx(2.0)


def test_diversity_ratio() -> None:
    real = torch.tensor([[0.0, 0.0], [3.0, 4.0], [10.0, 0.0], [10.0, 2.0]])
    groups = torch.tensor([0, 0, 1, 1])  # within-class distances 5 and 2
    assert families.diversity_ratio(real, groups, real, groups) == pytest.approx(1.0)
    same = torch.tensor([[1.0, 1.0], [1.0, 1.0], [5.0, 5.0], [5.0, 5.0]])  # collapsed
    assert families.diversity_ratio(same, groups, real, groups) == pytest.approx(0.0)
    half = real / 2  # half the spread in every class
    assert families.diversity_ratio(half, groups, real, groups) == pytest.approx(0.5)
    lonely = torch.tensor([0, 1, 1, 1])  # class 0 has one sample: only class 1 counts
    assert families.diversity_ratio(real, lonely, real, groups) == pytest.approx(
        (math.hypot(7, 4) + math.hypot(7, 2) + 2.0) / 3 / 2)


def test_high_frequency_energy_falls_with_blur() -> None:
    flat = torch.zeros(2, 1, 8, 8)
    assert families.high_frequency_energy(flat) == 0.0
    checker = (torch.arange(8)[:, None] + torch.arange(8)).remainder(2).float() * 2 - 1
    x = checker.expand(2, 1, 8, 8)  # ±1 alternating: the Laplacian is ∓8 everywhere
    assert families.high_frequency_energy(x) == pytest.approx(64.0)
    blurred = torch.nn.functional.avg_pool2d(x, 3, stride=1, padding=1)
    assert families.high_frequency_energy(blurred) < 0.2 * families.high_frequency_energy(x)


@pytest.mark.parametrize(("argv", "message"), [
    (["--minutes", "0"], "--minutes must be a positive number"),
    (["--minutes", "abc"], "argument --minutes: invalid float value"),
    (["--n", "2"], "--n must be at least 4"),
    (["--out", "x.txt"], "give a Markdown file"),
    (["--vae-kl-weight", "3"], "--vae-kl-weight must be in (0, 1]"),
])
def test_bad_input_is_one_line(argv: list[str], message: str,
                               capsys: pytest.CaptureFixture) -> None:
    assert families.main(argv) == 1
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1, err


@pytest.mark.slow
def test_a_tiny_run_of_the_three_families(shared_data: Path, tmp_path: Path) -> None:
    out = tmp_path / "families.md"
    torch.set_num_threads(1)
    assert families.main(["--minutes", "0.05", "--n", "32", "--runs", str(tmp_path / "runs"),
                          "--out", str(out), "--quiet"]) == 0
    text = out.read_text()
    for family in ("| vae |", "| gan |", "| diffusion |", "## Mode collapse and blur"):
        assert family in text
    assert out.with_suffix(".png").is_file()
    # a second call finds every budget spent and only samples again
    before = {p: p.stat().st_mtime_ns for p in (tmp_path / "runs").rglob("state.json")}
    assert families.main(["--minutes", "0.05", "--n", "32", "--runs", str(tmp_path / "runs"),
                          "--out", str(out), "--quiet"]) == 0
    assert before == {p: p.stat().st_mtime_ns for p in (tmp_path / "runs").rglob("state.json")}
