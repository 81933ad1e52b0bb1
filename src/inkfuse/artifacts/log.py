"""A run's `log.jsonl`: one JSON record per logged step (`step`, `loss`, its parts, `lr`, ...),
appended as training goes and cut back to the checkpoint when a run resumes, so that a resumed
log reads as if the run had never stopped.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from inkfuse.io import atomic_path

LOG = "log.jsonl"


def append_log(path: Path, record: dict[str, Any]) -> None:
    with path.open("a") as f:
        f.write(json.dumps(record) + "\n")


def read_log(path: Path) -> list[dict[str, Any]]:
    """The records of a log, skipping a last line cut short by a kill."""
    if not path.is_file():
        return []
    records = []
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict) and isinstance(record.get("step"), int):
            records.append(record)
    return records


def truncate_log(path: Path, step: int) -> None:
    """Drop log lines past the checkpoint we resume from, so a resumed log has no duplicates."""
    if not path.is_file():
        return
    kept = [r for r in read_log(path) if r["step"] <= step]
    with atomic_path(path) as tmp:
        tmp.write_text("".join(json.dumps(r) + "\n" for r in kept))
