from pathlib import Path

import pytest

# CI clones the repository beside shared/, which holds MNIST and Fashion-MNIST.
SHARED_DATA = Path(__file__).parents[2].parent / "shared" / "data"


@pytest.fixture
def shared_data(monkeypatch: pytest.MonkeyPatch) -> Path:
    """The shared data folder, as INKFUSE_DATA."""
    if not (SHARED_DATA / "mnist").is_dir():
        pytest.skip(f"shared datasets not found at {SHARED_DATA} (clone the repo beside shared/)")
    monkeypatch.setenv("INKFUSE_DATA", str(SHARED_DATA))
    return SHARED_DATA


@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """No test may reach the network."""
    monkeypatch.setenv("INKFUSE_OFFLINE", "1")
