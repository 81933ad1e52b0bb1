"""`inkfuse textlm train`: pretrain the Imagen-style text encoder, a masked LM on captions alone.

    inkfuse textlm train --out runs/textlm                    # the textlm-shapes recipe
    inkfuse textlm train textlm-shapes --set data.max_objects=2 --set train.steps=3000

A text-conditioned diffusion recipe then reads it with `--set text.encoder=runs/textlm` (or
trains its own into RUN/clip with `text.kind = "lm"`).
"""

from __future__ import annotations

import argparse
from typing import Any

from inkfuse.cli.args import add_train_args, overrides, run_dir


def add_parser(subparsers: Any) -> None:
    """Register `textlm` (with train) on the main parser's subparsers."""
    lm = subparsers.add_parser("textlm", help="pretrain a text-only encoder (masked LM, Imagen)")
    sub = lm.add_subparsers(dest="textlm_command", required=True)
    tr = sub.add_parser("train", help="train (or resume) a masked LM on shapes captions or a "
                        "captioned folder")
    add_train_args(tr, "text-LM recipe", default="textlm-shapes")
    tr.set_defaults(fn=cmd_train)


def cmd_train(args: argparse.Namespace) -> None:
    from inkfuse.artifacts.checkpoint import read_json
    from inkfuse.config import load_recipe
    from inkfuse.train import train

    config = load_recipe(args.recipe, overrides(args), kind="textlm")
    out = train(config, run_dir(args), progress=not args.quiet)
    metrics = read_json(out / "textlm.json")["metrics"]
    print(f"held-out masked accuracy {metrics['masked_accuracy']:.4f} "
          f"(the best constant guess: {metrics['unigram_accuracy']:.4f})")
    print(f"saved to {out} (textlm.safetensors, textlm.json)")
