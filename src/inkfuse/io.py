"""Atomic file writes, so a crash or Ctrl-C never leaves a half-written file behind.

Checkpoints, sample grids, GIFs and plots are all written the same way: the writer fills a
temporary file next to the destination, and only a complete file is renamed over it
(`os.replace` is atomic within one filesystem, hence "next to", never in /tmp).
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterator
from pathlib import Path


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
    tmp = dest.with_name(f".{dest.stem}.{secrets.token_hex(4)}.tmp{dest.suffix}")
    try:
        yield tmp
        with open(tmp, "r+b") as f:  # raises FileNotFoundError if the writer wrote nothing
            os.fsync(f.fileno())
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
