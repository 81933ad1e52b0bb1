"""A run's `log.jsonl`: one JSON record per logged step (`step`, `loss`, its parts, `lr`, the
training time `seconds` and `train_seconds`), and one per in-training score (`step`, `eval`:
{metric: value}, see `train.eval_every`), appended as training goes and cut back to the
checkpoint when a run resumes, so that a resumed log reads as if the run had never stopped.
Each record's structure is `schema.LOG_RECORD`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from inkfuse.artifacts.checkpoint import writing
from inkfuse.artifacts.schema import LOG_RECORD, check_json
from inkfuse.errors import CheckpointError
from inkfuse.io import atomic_path, write_new

LOG = "log.jsonl"
_FIX = "delete that line (or the log) and run the same command again"
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)


def append_log(path: Path, record: dict[str, Any]) -> None:
    """One record as one write (a kill cuts at most the last line short); never through a
    symlink put at the log's name."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | _NOFOLLOW, 0o666)
    with os.fdopen(fd, "a") as f:
        f.write(json.dumps(record) + "\n")


def read_log(path: Path) -> list[dict[str, Any]]:
    """The records of a log. A last line without its newline is what a kill mid-write leaves
    and is skipped; any other line that is not a record with an integer `step` means the file
    was damaged or edited, and is one CheckpointError naming the line, not a silent gap."""
    if not path.is_file():
        return []
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{path} cannot be read ({e}); restore it or delete it") from None
    lines = text.split("\n")
    records = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            if number == len(lines):  # no newline after it: cut short by a kill
                continue
            raise CheckpointError(f"{path} line {number} is not JSON ({line[:40]!r}); delete "
                                  "that line (or the log) and run the same command again"
                                  ) from None
        if not (isinstance(record, dict) and isinstance(record.get("step"), int)
                and not isinstance(record["step"], bool)):
            raise CheckpointError(f"{path} line {number} is not a log record with an integer "
                                  f"'step'; {_FIX}")
        check_json(record, LOG_RECORD, path, f"line {number}", _FIX)
        records.append(record)
    return records


def truncate_log(path: Path, step: int) -> None:
    """Drop log lines past the checkpoint we resume from, so a resumed log has no duplicates."""
    if not path.is_file():
        return
    kept = [r for r in read_log(path) if r["step"] <= step]
    with writing(path), atomic_path(path) as tmp:  # a fresh unique name, created exclusively
        write_new(tmp, "".join(json.dumps(r) + "\n" for r in kept).encode())
