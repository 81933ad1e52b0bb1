"""One writer per run dir: an exclusive `flock` on `RUN/.lock`, taken before anything is written.

Two trainers in one run dir would interleave checkpoints and leave one run's config.json beside
the other's weights. The kernel drops the lock when its process dies however it dies (kill -9
included), so a stale lock never blocks the next command; the pid written into the file is only
there to name the holder in the message.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

from inkfuse.errors import CheckpointError

LOCK = ".lock"


@contextlib.contextmanager
def locked(run_dir: str | os.PathLike[str]) -> Iterator[Path]:
    """Hold `run_dir`'s lock for the block (creating the folder if need be); a second process
    gets a CheckpointError naming the holder's pid instead of waiting."""
    run_dir = Path(run_dir)
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        # O_NOFOLLOW: a symlink planted at RUN/.lock is refused, not followed and truncated
        fd = os.open(run_dir / LOCK, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
    except FileExistsError:
        raise CheckpointError(f"{run_dir} is a file, not a run dir; choose another --out") from None
    except OSError as e:
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
        yield run_dir
    finally:
        os.close(fd)  # closing the descriptor releases the lock
