"""One writer per run dir: an exclusive `flock` on `RUN/.lock`, taken before anything is written.

A command that fails leaves nothing it created: with `keep` given, a block that ends in any
exception (Ctrl-C and SIGTERM included) while `keep()` is false removes, still under the lock,
what the command added: the run dir and the parents the lock made, or, in a folder that was
already there, only the entries that were not. So a first step that fails cannot leave a
config.json behind that refuses the corrected command, and a folder of the user's is never
removed.

Two trainers in one run dir would interleave checkpoints and leave one run's config.json beside
the other's weights. The kernel drops the lock when its process dies however it dies (kill -9
included), so a stale lock never blocks the next command; the pid written into the file is only
there to name the holder in the message.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

from inkfuse.errors import CheckpointError

LOCK = ".lock"


@contextlib.contextmanager
def locked(run_dir: str | os.PathLike[str], keep: Callable[[], bool] | None = None
           ) -> Iterator[Path]:
    """Hold `run_dir`'s lock for the block (creating the folder if need be); a second process
    gets a CheckpointError naming the holder's pid instead of waiting. With `keep`, a failed
    block whose `keep()` is false takes back what it created (module docstring)."""
    run_dir = Path(run_dir)
    made = _missing_parents(run_dir)  # [run_dir, its parent, ...]: the folders mkdir creates
    before = set() if made else _entries(run_dir)
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        # O_NOFOLLOW: a symlink planted at RUN/.lock is refused, not followed and truncated
        fd = os.open(run_dir / LOCK, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
    except FileExistsError:
        raise CheckpointError(f"{run_dir} is a file, not a run dir; choose another --out") from None
    except OSError as e:
        _remove_folders(made)
        raise CheckpointError(f"cannot lock {run_dir / LOCK} ({e.strerror}); check that "
                              f"{run_dir} is a writable folder") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            raise CheckpointError(f"{run_dir} is being written by another inkfuse process "
                                  f"(pid {holder}); wait for it to finish, or use another "
                                  "--out") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        try:
            yield run_dir
        except BaseException:
            if keep is not None and not keep():
                _take_back(run_dir, made, before)
            raise
    finally:
        os.close(fd)  # closing the descriptor releases the lock


def _missing_parents(path: Path) -> list[Path]:
    """`path` and its ancestors that do not exist yet, innermost first."""
    missing = []
    while not path.exists() and not path.is_symlink() and path != path.parent:
        missing.append(path)
        path = path.parent
    return missing


def _entries(folder: Path) -> set[str]:
    try:
        return {p.name for p in folder.iterdir()}
    except OSError:  # not a folder (the lock refuses it) or unreadable
        return set()


def _take_back(run_dir: Path, made: list[Path], before: set[str]) -> None:
    """Remove what was created in or as `run_dir` since the lock was asked for."""
    if made:
        shutil.rmtree(run_dir, ignore_errors=True)
        _remove_folders(made[1:])
        return
    for name in _entries(run_dir) - before:
        path = run_dir / name
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            with contextlib.suppress(OSError):
                path.unlink()


def _remove_folders(folders: list[Path]) -> None:
    """Remove the (empty) folders we made, innermost first; one that something else filled
    meanwhile stays."""
    for folder in folders:
        with contextlib.suppress(OSError):
            folder.rmdir()
