"""A text run's learned tokens (textual inversion): one small file each beside the run.

    RUN/tokens/magenta-ish.safetensors   the token's embedding row ("embedding" [width]) and, as
                                         metadata, the exact token string and the identity of
                                         the text encoder it was learned for
    RUN/tokens/magenta-ish/              how it was learned (checkpoint/, log.jsonl, loss.png):
                                         what a rerun of an interrupted `inkfuse invert` resumes

`load_tokens` adds every token file of a folder to a text conditioner; `load_conditioner` calls
it for RUN/tokens, so a run loaded to sample from reads its learned tokens in prompts. A row
learned for another text encoder is refused (it would mean nothing to this one), as is a file of
the wrong shape or dtype, or a damaged one, each in one line.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

from torch import Tensor

from inkfuse.artifacts.checkpoint import check_weights, read_tensors, save_tensors
from inkfuse.errors import CheckpointError, ConfigError
from inkfuse.text.conditioner import TextConditioner

TOKENS = "tokens"  # the folder in a run dir
KIND = "token"  # the safetensors metadata "kind" of a token file
ROW = "embedding"  # its one tensor


def slug(token: str) -> str:
    """A file name for `token`: its letters, digits, "-" and "_" ("<magenta-ish>" ->
    "magenta-ish"); "token" when it has none."""
    return re.sub(r"[^a-z0-9_-]+", "-", token.lower()).strip("-") or "token"


def token_file(run_dir: str | Path, token: str) -> Path:
    return Path(run_dir) / TOKENS / f"{slug(token)}.safetensors"


def work_dir(run_dir: str | Path, token: str) -> Path:
    """Where `token` is trained: a folder of RUN/tokens that the training loop writes as its
    run dir (lock, checkpoint, log), so a learned token never touches the run's own files."""
    return Path(run_dir) / TOKENS / slug(token)


def run_of(work: Path) -> Path:
    """The text run a `work_dir` belongs to."""
    return work.parent.parent


def token_files(folder: Path) -> list[Path]:
    """The token files of a RUN/tokens folder, sorted (temp files of a write in progress,
    hidden, left out)."""
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.glob("*.safetensors")
                  if p.is_file() and not p.name.startswith("."))


def _fix(path: Path) -> str:
    return (f"delete {path} or learn the token again (inkfuse invert {path.parent.parent} "
            "--images DIR --token TOKEN --force)")


def read_token(path: Path, text: TextConditioner) -> tuple[str, Tensor, dict[str, str]]:
    """(token, row [width], metadata) of a token file, checked against `text`: ours and of the
    kind, one row of the table's width and dtype, finite, learned for this very encoder."""
    tensors, meta = read_tensors(path, _fix(path))
    token = meta.get("token", "")
    if meta.get("kind") != KIND or not token:
        raise CheckpointError(f"{path} is not a learned token (no kind '{KIND}' with a token "
                              f"string in its metadata); {_fix(path)}")
    check_weights(tensors, {ROW: text.blank_row()}, path, "this run's text encoder",
                  fix=_fix(path))
    row = tensors[ROW]
    if not row.isfinite().all():
        raise CheckpointError(f"{path}: the row of {token!r} is not finite; {_fix(path)}")
    if meta.get("clip") != text.identity:
        raise CheckpointError(f"{path}: {token!r} was learned for another text encoder than "
                              f"this run's (its CLIP differs), where its row means nothing; "
                              f"{_fix(path)}")
    return token, row, meta


def load_tokens(folder: str | Path, text: TextConditioner) -> list[str]:
    """Add every token file in `folder` (RUN/tokens) to `text`; returns the tokens. A file
    whose token `text` cannot take (a clash) is refused in one line naming it."""
    added = []
    for path in token_files(Path(folder)):
        token, row, _ = read_token(path, text)
        try:
            text.add_token(token, row)
        except ConfigError as e:
            raise CheckpointError(f"{path}: {e}; {_fix(path)}") from None
        added.append(token)
    return added


def save_token(run_dir: str | Path, token: str, row: Tensor, identity: str,
               **info: str) -> Path:
    """Write `token`'s row [width] into RUN/tokens atomically, with the token, the identity of
    the text encoder and `info` (how it was learned) as metadata; returns the file."""
    path = token_file(run_dir, token)
    save_tensors(path, {ROW: row.detach().float()}, kind=KIND, token=token, clip=identity,
                 **info)
    return path


def learned_token(run_dir: str | Path, token: str) -> Path | None:
    """The file holding `token` in RUN/tokens, or None. A file of the same name that holds
    another token (one of the same letters) is a ConfigError: the new one needs other letters."""
    path = token_file(run_dir, token)
    if not path.is_file():
        return None
    try:
        _, meta = read_tensors(path, _fix(path))
    except CheckpointError:
        return path  # damaged: what --force replaces
    if meta.get("token", token) != token:
        raise ConfigError(f"{path} holds the learned token {meta['token']!r}, which has the "
                          f"same letters as {token!r}: choose a name with other letters")
    return path


def discard_training(run_dir: str | Path, token: str) -> None:
    """Remove how `token` was learned (its work dir), so that it is learned again from scratch;
    the token file stays until the new one replaces it."""
    shutil.rmtree(work_dir(run_dir, token), ignore_errors=True)
