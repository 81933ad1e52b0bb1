"""The `inkfuse` command: the parser, made of the command groups, and the one place where errors
become messages.

Every mistake a user can fix (bad path, bad value, damaged file) is an `InkfuseError`; it is
printed as `inkfuse: error: ...` with exit status 1, never as a traceback. Ctrl-C exits with 130
and a line saying what was kept; a failing file operation (disk full, permissions) is one line.
"""

from __future__ import annotations

import argparse
import sys

from inkfuse.cli import clip, data, edit, eval, sample, train, vae, viz
from inkfuse.errors import InkfuseError
from inkfuse.runtime import keep_freed_memory

# Each group registers its commands with `add_parser(subparsers)`, in the order `--help` lists
# them. The groups import torch and the models inside their command functions, never at the
# top: the parser is built on every call, and `inkfuse --help` should answer at once.
GROUPS = (train, sample, viz, eval, edit, clip, vae, data)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="inkfuse", description="Diffusion models, from a "
                                     "U-Net to text-to-image.")
    subparsers = parser.add_subparsers(dest="command", required=True)
    for group in GROUPS:
        group.add_parser(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one command; returns the exit status (0, 1 for an error, 130 when interrupted)."""
    try:
        args = build_parser().parse_args(argv)  # values are checked here (`args.number`)
        keep_freed_memory()
        args.fn(args)
    except InkfuseError as e:
        print(f"inkfuse: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("inkfuse: interrupted; the last checkpoint is kept (run the same command to "
              "resume)", file=sys.stderr)
        return 130
    except OSError as e:
        print(f"inkfuse: error: {e.strerror or e} ({e.filename or 'file system'})",
              file=sys.stderr)
        return 1
    return 0
