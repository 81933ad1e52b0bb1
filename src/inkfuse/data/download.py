"""Where datasets live, and getting their files there intact.

Files sit at `<data dir>/<dataset>/<original file name>`, so a copy fetched by hand (or by another
tool) is used as is. Every file is checked against its published checksum each time it is used:
hashing even CIFAR-10's 170 MB takes a fraction of a second, and a shared data folder may be
read-only, so there is no verification cache to keep in sync. Downloads go to a temporary file in
the same folder and are renamed only once their checksum matches, so an interrupted download never
looks like a finished one.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import tempfile
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from inkfuse.errors import DataError


def data_dir() -> Path:
    """The default data folder: $INKFUSE_DATA, else the user cache (`$XDG_CACHE_HOME/inkfuse/data`
    or `~/.cache/inkfuse/data`)."""
    if os.environ.get("INKFUSE_DATA"):
        return Path(os.environ["INKFUSE_DATA"]).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache) / "inkfuse" / "data"


def offline() -> bool:
    """True when INKFUSE_OFFLINE is set (to anything but 0): missing files are an error at once."""
    return os.environ.get("INKFUSE_OFFLINE", "0") not in ("", "0")


@dataclass(frozen=True)
class Remote:
    """One file a dataset needs: its name, its md5 or sha256, and base URLs tried in order."""

    filename: str
    checksum: str
    mirrors: tuple[str, ...]

    def fetch(self, folder: Path) -> Path:
        """`folder/filename`, verified, downloaded first if missing."""
        urls = [mirror + self.filename for mirror in self.mirrors]
        return fetch_file(urls, folder / self.filename, self.checksum)


def digest(path: Path, checksum: str) -> str:
    """The hex digest of `path` in the same algorithm as `checksum` (32 hex = md5, else sha256)."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "md5" if len(checksum) == 32 else "sha256").hexdigest()


def fetch_file(urls: Sequence[str], dest: Path, checksum: str) -> Path:
    """Return `dest` after checking its checksum, downloading it from the first working URL if it
    is missing. Raises DataError naming the file, its folder and where to get it."""
    dest = Path(dest)
    if dest.is_file():
        got = digest(dest, checksum)
        if got != checksum:
            raise DataError(
                f"{dest} is corrupt or truncated (checksum {got}, expected {checksum}); "
                "delete it and run again to download it afresh"
            )
        return dest
    if offline():
        reason = "downloads are off: INKFUSE_OFFLINE is set"
    else:
        reason = "no URL given"
        for url in urls:
            try:
                _download(url, dest, checksum)
                return dest
            except (OSError, ValueError, http.client.HTTPException) as e:  # URLError is an OSError
                reason = f"{url}: {e}"
    raise DataError(
        f"{dest.name} not found in {dest.parent} and download failed ({reason}); download it from "
        f"{urls[0] if urls else 'its source'} and place it there, or set INKFUSE_DATA"
    )


def _download(url: str, dest: Path, checksum: str) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=dest.parent, prefix=f".{dest.name}.", delete=False) as f:
        tmp = Path(f.name)
    try:
        with urllib.request.urlopen(url, timeout=60) as response, open(tmp, "wb") as out:
            total = int(response.headers.get("Content-Length") or 0) or None
            with tqdm(total=total, unit="B", unit_scale=True, desc=dest.name, leave=False) as bar:
                while chunk := response.read(1 << 20):
                    out.write(chunk)
                    bar.update(len(chunk))
        if digest(tmp, checksum) != checksum:
            raise ValueError("checksum mismatch")
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)
