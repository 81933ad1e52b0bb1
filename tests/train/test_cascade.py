"""Cascaded diffusion: a super-resolution run reads the enlarged, noised low-res image, and
`sample --upsample` chains a base run into it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from inkfuse import pipelines
from inkfuse.cli import main
from inkfuse.config import load_recipe
from inkfuse.diffusion import Schedule
from inkfuse.diffusion.upsampling import enlarge, shrink, with_low_res
from inkfuse.errors import ConfigError
from inkfuse.train import train


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory, tiny_overrides: list[str]) -> tuple[Path, Path]:
    """An 8 px base run and an 8 -> 16 px super-resolution run, a few steps each."""
    root = tmp_path_factory.mktemp("cascade")
    base = train(load_recipe("shapes", [*tiny_overrides, "data.size=8"]), root / "base",
                 progress=False)
    sr = train(load_recipe("shapes", [*tiny_overrides, "data.low_res=8", "data.labels='none'"]),
               root / "sr", progress=False)
    return base, sr


def test_the_low_res_hint_is_the_enlarged_noised_image() -> None:
    s = Schedule("cosine", 100)
    low = torch.rand(2, 3, 4, 4) * 2 - 1
    clean = with_low_res(None, low, 8, torch.tensor([0, 0]), s)
    assert clean.low_res.shape == (2, 3, 8, 8)
    assert torch.equal(clean.low_res, enlarge(low, 8))
    noisy = with_low_res(None, low, 8, torch.tensor([90, 90]), s)
    assert (noisy.low_res - enlarge(low, 8)).abs().mean() > 0.3
    assert torch.equal(noisy.low_res_t, torch.tensor([90, 90]))
    blocks = low.repeat_interleave(2, dim=2).repeat_interleave(2, dim=3)
    assert torch.allclose(shrink(blocks, 4), low, atol=1e-6)  # area: the mean of each block


def test_super_resolution_output_size_and_conditioning(runs: tuple[Path, Path]) -> None:
    _, sr_dir = runs
    sr = pipelines.load_run(sr_dir)
    assert sr.config.model.low_res_channels == 3 and sr.shape == (3, 16, 16)
    low = torch.rand(2, 3, 8, 8) * 2 - 1
    a = pipelines.sample(sr, 2, low_res=low, steps=3, progress=False)
    b = pipelines.sample(sr, 2, low_res=-low, steps=3, progress=False)
    assert a.shape == (2, 3, 16, 16) and not torch.allclose(a, b)  # the hint matters
    with pytest.raises(ConfigError, match="upsamples 8x8 images"):
        pipelines.sample(sr, 2, steps=3, progress=False)
    with pytest.raises(ConfigError, match="low-res images must be"):
        pipelines.sample(sr, 2, low_res=low[:1], steps=3, progress=False)


def test_cli_chains_base_and_upsampler(runs: tuple[Path, Path], tmp_path: Path, capsys) -> None:
    base, sr = runs
    out = tmp_path / "cascade.npz"
    assert main(["sample", str(base), "--upsample", str(sr), "--n", "4", "--steps", "2",
                 "--out", str(out)]) == 0
    arrays = np.load(out)
    assert arrays["images"].shape == (4, 16, 16, 3)
    assert list(arrays["labels"]) == [0, 1, 2, 3]
    assert main(["sample", str(sr), "--out", str(tmp_path / "x.png")]) == 1
    assert "upsamples 8x8 images" in capsys.readouterr().err
