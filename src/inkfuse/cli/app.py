"""The `inkfuse` command: the parser, made of the command groups, and the one place where errors
become messages.

Every mistake a user can fix (bad path, bad value, damaged file, unknown flag) is an
`InkfuseError`; it is printed as `inkfuse: error: ...` on one line with exit status 1, never as
a traceback or argparse's usage text. Ctrl-C, and SIGTERM (a scheduler or `kill`, which is
handled as Ctrl-C), exit with 130 (143) and a line saying what was kept: training keeps its
last checkpoint, every other command writes nothing. A failing file operation (disk full,
permissions) is one line with a fix.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import signal
import sys
from collections.abc import Iterator
from typing import Any, NoReturn

from inkfuse.cli import (
    clip,
    data,
    edit,
    ema,
    eval,
    finetune,
    gan,
    invert,
    play,
    sample,
    textlm,
    train,
    unclip,
    vae,
    viz,
)
from inkfuse.errors import ConfigError, InkfuseError
from inkfuse.runtime import keep_freed_memory

# Each group registers its commands with `add_parser(subparsers)`, in the order `--help` lists
# them. The groups import torch and the models inside their command functions, never at the
# top: the parser is built on every call, and `inkfuse --help` should answer at once.
GROUPS = (train, finetune, sample, unclip, viz, eval, ema, edit, invert, clip, textlm, vae, gan,
          data, play)


class Parser(argparse.ArgumentParser):
    """argparse, with its own mistakes (unknown flag, missing argument, bad choice) as one-line
    ConfigErrors that point at the command's --help, instead of usage text and exit status 2.
    Subparsers are of the same class (argparse makes them `type(parent)`)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.set_defaults(_prog=self.prog)  # the innermost command's wins: its --help is named

    def error(self, message: str) -> NoReturn:
        raise ConfigError(f"{message} (see `{self.prog} --help`)")

    def parse_args(self, args: Any = None, namespace: Any = None) -> argparse.Namespace:
        ns, extra = self.parse_known_args(args, namespace)
        if extra:
            raise ConfigError(f"unrecognized arguments: {' '.join(extra)} "
                              f"(see `{getattr(ns, '_prog', self.prog)} --help`)")
        return ns


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="inkfuse", description="Diffusion models, from a U-Net to "
                    "text-to-image.")
    subparsers = parser.add_subparsers(dest="command", required=True)
    for group in GROUPS:
        group.add_parser(subparsers)
    return parser


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the program is, so that it unwinds as for Ctrl-C: temporary files
    are removed, training keeps its last checkpoint."""


def _raise_terminated(signum: int, frame: Any) -> None:
    raise Terminated


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    try:
        previous = signal.signal(signal.SIGTERM, _raise_terminated)
    except ValueError:  # not the main thread: leave signals alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


# the fix for a failing file operation, by errno (the message itself names the problem)
_OS_FIXES = {
    errno.EEXIST: "remove it or choose another path",
    errno.ENOTEMPTY: "remove it or choose another path",
    errno.EACCES: "check its permissions or choose another path",
    errno.EPERM: "check its permissions or choose another path",
    errno.EROFS: "the file system is read-only: choose another path",
    errno.ENOSPC: "free some disk space and run the command again",
    errno.EDQUOT: "free some disk space and run the command again",
    errno.ENOENT: "check the path",
    errno.ENOTDIR: "a part of the path is a file, not a folder: check the path",
    errno.EISDIR: "it is a folder: give a file path",
    errno.ENAMETOOLONG: "choose a shorter path",
}


def os_error_message(e: OSError) -> str:
    """One line for a failing file operation: what failed, on which path, and the fix."""
    where = e.filename or "file system"
    if e.filename2:
        where = f"{where} -> {e.filename2}"
    fix = _OS_FIXES.get(e.errno, "check the path and the disk")
    return f"{e.strerror or e} ({where}); {fix}"


def _has_checkpoint(args: argparse.Namespace) -> bool:
    """Whether an interrupted training command leaves a checkpoint to resume from (before the
    first one, the loop removes the run dir it created)."""
    from pathlib import Path

    from inkfuse.artifacts.checkpoint import find
    from inkfuse.cli.args import run_dir

    try:
        return find(Path(run_dir(args))) is not None
    except InkfuseError:
        return False


def main(argv: list[str] | None = None) -> int:
    """Run one command; returns the exit status (0, 1 for an error, 130 when interrupted,
    143 on SIGTERM)."""
    args = None
    try:
        with _sigterm_as_interrupt():
            args = build_parser().parse_args(argv)  # values are checked here (`args.number`)
            keep_freed_memory()
            args.fn(args)
    except InkfuseError as e:
        print(f"inkfuse: error: {' '.join(str(e).split())}", file=sys.stderr)
        return 1
    except KeyboardInterrupt as e:
        kept = "nothing was written"
        if getattr(args, "resumable", False):
            kept = ("the last checkpoint is kept (run the same command to resume)"
                    if _has_checkpoint(args) else "it stopped before the first checkpoint, so "
                    "nothing was kept")
        what = "terminated" if isinstance(e, Terminated) else "interrupted"
        print(f"inkfuse: {what}; {kept}", file=sys.stderr)
        return 143 if isinstance(e, Terminated) else 130
    except OSError as e:
        print(f"inkfuse: error: {os_error_message(e)}", file=sys.stderr)
        return 1
    return 0
