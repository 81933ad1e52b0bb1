"""Shared test set-up: real datasets from ../shared/data, tiny configs that train in seconds."""

from __future__ import annotations

import os
import platform
from collections.abc import Iterator
from pathlib import Path

# x86 kernels round differently on AVX2 and AVX-512 (PyTorch's own, oneDNN's and MKL's dispatch),
# so the bit-exact digests of test_golden would hold on one kind of CPU only: the suite runs the
# AVX2 kernels everywhere on x86, set before torch loads (a user's own runs are untouched).
if platform.machine().lower() in ("x86_64", "amd64"):
    for var, isa in (("ATEN_CPU_CAPABILITY", "avx2"), ("ONEDNN_MAX_CPU_ISA", "AVX2"),
                     ("MKL_ENABLE_INSTRUCTIONS", "AVX2")):
        os.environ.setdefault(var, isa)

import pytest
import torch

# CI clones the repository beside shared/, which holds MNIST, Fashion-MNIST and the FID network.
SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
os.environ.setdefault("INKFUSE_DATA", str(SHARED_DATA))
os.environ["INKFUSE_OFFLINE"] = "1"  # no test may reach the network


@pytest.fixture
def shared_data(monkeypatch: pytest.MonkeyPatch) -> Path:
    """The shared data folder, as INKFUSE_DATA; skips where the checkout has none beside it."""
    if not (SHARED_DATA / "mnist").is_dir():
        pytest.skip(f"shared datasets not found at {SHARED_DATA} (clone the repo beside shared/)")
    monkeypatch.setenv("INKFUSE_DATA", str(SHARED_DATA))
    return SHARED_DATA


@pytest.fixture(scope="session")
def tiny_overrides() -> list[str]:
    """A few-second shapes run: 16 px, a 2-level U-Net of 8 channels, 6 steps."""
    return [
        "data.size=16", "data.count=256", "model.base_channels=8", "model.channel_mult=[1, 2]",
        "model.groups=4", "train.steps=6", "train.batch_size=16", "train.checkpoint_every=3",
        "train.warmup_steps=2", "train.log_every=1", "train.precision='fp32'",
        "sample.steps=3", "sample.per_class=2", "diffusion.timesteps=50",
    ]


@pytest.fixture(scope="module")
def one_thread() -> Iterator[None]:
    """Tiny models gain nothing from a second thread, and on a busy 2-core machine each step
    then waits for the slower core (measured on the CLIP test: 12 s with 1 thread, 180 s with
    2). Use with `pytestmark = pytest.mark.usefixtures("one_thread")`."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def killed_after_checkpoint(monkeypatch: pytest.MonkeyPatch):
    """`kill(config, out)`: train into `out`, interrupted (KeyboardInterrupt) right after its
    first checkpoint is written: what a kill between two steps leaves, without a subprocess."""
    from inkfuse.artifacts import checkpoint
    from inkfuse.train import train

    def kill(config, out: Path) -> None:
        real_save = checkpoint.save

        def save_then_die(*args, **kwargs):
            real_save(*args, **kwargs)
            raise KeyboardInterrupt

        monkeypatch.setattr(checkpoint, "save", save_then_die)
        try:
            with pytest.raises(KeyboardInterrupt):
                train(config, out, progress=False)
        finally:
            monkeypatch.setattr(checkpoint, "save", real_save)

    return kill
