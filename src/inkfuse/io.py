"""Atomic file writes, so a crash or Ctrl-C never leaves a half-written file behind.

Checkpoints, sample grids, GIFs and plots are all written the same way: the writer fills a
temporary file next to the destination, and only a complete file is renamed over it
(`os.replace` is atomic within one filesystem, hence "next to", never in /tmp).
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import stat
from collections.abc import Iterator
from pathlib import Path

_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)  # Windows has none (nor these symlinks)


def write_new(path: str | os.PathLike[str], data: bytes) -> None:
    """Write `data` to a file that must not exist yet: O_EXCL and O_NOFOLLOW, so a file or a
    symlink planted at the name is an error (FileExistsError) and is never written through.
    For the temp file of `atomic_path`, whose name is fresh."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW, 0o666)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success rename it over `path`, on error delete it.

    The temporary name keeps the destination's suffix, so writers that pick a format from the
    extension (PIL, matplotlib, torch) behave the same. The file is not created in advance, so
    it gets the usual umask permissions rather than mkstemp's 0600. The contents and the rename
    are fsynced, so after a power cut the destination is the old file or the new one, never an
    empty one. Missing parent directories are created. Files only, not directories.

        with atomic_path(run_dir / "model.safetensors") as tmp:
            save_file(state, tmp)
    """
    dest = Path(path)
    dest.parent.mkdir(parents=True, exist_ok=True)
    while True:  # a unique name: two writers of one file never share a temp file
        tmp = dest.with_name(f".{dest.stem}.{secrets.token_hex(8)}.tmp{dest.suffix}")
        if not os.path.lexists(tmp):
            break
    try:
        yield tmp
        # raises FileNotFoundError if the writer wrote nothing; never follows a symlink that
        # was put in the file's place, and never renames one over the destination
        fd = os.open(tmp, os.O_RDWR | _NOFOLLOW)
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise OSError(errno.EINVAL, f"{tmp} is not a regular file")
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, dest)
    except BaseException:  # also on KeyboardInterrupt: never leave the temporary file behind
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        raise
    if os.name == "posix":  # make the rename itself durable
        fd = os.open(dest.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def copy_files(src: str | os.PathLike[str], dst: str | os.PathLike[str],
               names: tuple[str, ...]) -> None:
    """Copy the files `names` of folder `src` into `dst`, each atomically (a run dir keeps its
    own copy of the frozen models it depends on)."""
    import shutil

    for name in names:
        with atomic_path(Path(dst) / name) as tmp:
            shutil.copyfile(Path(src) / name, tmp)
