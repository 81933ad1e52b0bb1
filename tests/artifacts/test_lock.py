"""The run-dir lock: one writer at a time, a clear line naming the holder, no stale locks."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from inkfuse.artifacts.lock import LOCK, locked
from inkfuse.errors import CheckpointError


def test_a_second_writer_is_refused_with_the_holders_pid(tmp_path: Path) -> None:
    held = rf"another inkfuse process \(pid {os.getpid()}\)"
    with locked(tmp_path / "run"), pytest.raises(CheckpointError, match=held), \
            locked(tmp_path / "run"):
        pass
    with locked(tmp_path / "run"):  # released on exit
        pass


def test_a_killed_holder_leaves_no_stale_lock(tmp_path: Path) -> None:
    code = ("import os, sys; from inkfuse.artifacts.lock import locked\n"
            "with locked(sys.argv[1]): os._exit(9)")
    subprocess.run([sys.executable, "-c", code, str(tmp_path / "run")], check=False)
    assert (tmp_path / "run" / LOCK).is_file()
    with locked(tmp_path / "run"):
        pass


def test_a_planted_symlink_is_not_followed(tmp_path: Path) -> None:
    (tmp_path / "run").mkdir()
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    (tmp_path / "run" / LOCK).symlink_to(victim)
    with pytest.raises(CheckpointError, match="cannot lock"), locked(tmp_path / "run"):
        pass
    assert victim.read_text() == "keep me"


def test_a_file_in_place_of_the_run_dir_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "run").write_text("")
    with pytest.raises(CheckpointError, match="is a file, not a run dir"), \
            locked(tmp_path / "run"):
        pass
