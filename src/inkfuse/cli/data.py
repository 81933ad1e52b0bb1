"""`inkfuse data`: list the datasets and download one (checksums verified).

    inkfuse data list && inkfuse data fetch fashion-mnist
"""

from __future__ import annotations

import argparse
from typing import Any

from inkfuse.errors import ConfigError


def add_parser(subparsers: Any) -> None:
    """Register `data` on the main parser's subparsers."""
    da = subparsers.add_parser("data", help="list or download datasets")
    da.add_argument("what", choices=["list", "fetch"])
    da.add_argument("name", nargs="?")
    da.set_defaults(fn=cmd_data)


def cmd_data(args: argparse.Namespace) -> None:
    from inkfuse import data

    if args.what == "list":
        for name, description in data.list_datasets():
            print(f"{name:15s} {description}")
        print(f"data dir: {data.data_dir()} (set INKFUSE_DATA to change)")
    else:
        if not args.name:
            raise ConfigError("usage: inkfuse data fetch NAME (see `inkfuse data list`)")
        print(f"{args.name}: ready in {data.fetch(args.name)}")
