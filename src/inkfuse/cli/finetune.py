"""`inkfuse finetune`: DreamBooth on a trained text run, optionally with LoRA adapters only.

    inkfuse finetune runs/text --images photos/ --prompt "a red circle" --out runs/text-ft
    inkfuse finetune runs/text --images photos/ --prompt "a red circle" \\
        --class-prompt "a circle" --lora 4 --out runs/text-lora
    inkfuse sample runs/text-lora --prompt "a red circle above a blue square" --out x.png

Rerunning the same command resumes it from its last checkpoint.
"""

from __future__ import annotations

import argparse
from typing import Any

from inkfuse.cli.args import SEED_MAX, existing_run, number, run_dir


def add_parser(subparsers: Any) -> None:
    """Register `finetune` on the main parser's subparsers."""
    ft = subparsers.add_parser("finetune", help="teach a text run a subject from a few images "
                               "(DreamBooth; --lora for adapters only)")
    ft.add_argument("run_dir", help="the trained text run to fine-tune (it is not changed)")
    ft.add_argument("--images", required=True,
                    help="folder of the subject's images (captions.csv `path,caption` if it has "
                         "one, else --prompt for all)")
    ft.add_argument("--prompt", required=True, help="the caption of the subject's images")
    ft.add_argument("--out", required=True, help="the new run dir")
    ft.add_argument("--class-prompt", default="",
                    help="prior preservation: the subject's class, e.g. 'a circle' (default: "
                         "none)")
    ft.add_argument("--prior-weight", action=number(float, lo=0, hi=100), default=None,
                    help="weight of the prior-preservation loss (default 1)")
    ft.add_argument("--class-images", action=number(int, lo=1, most=100_000), default=None,
                    help="class images the base run draws for it (default 100)")
    ft.add_argument("--lora", action=number(int, lo=1, hi=1024), default=None, metavar="RANK",
                    help="train rank-RANK adapters on the attention only (default: every "
                         "weight)")
    ft.add_argument("--lora-alpha", action=number(float, lo=0, hi=4096), default=None,
                    help="the adapters' scale is alpha / rank (default: alpha = rank)")
    ft.add_argument("--steps", action=number(int, lo=1, most=10_000_000), default=None,
                    help="training steps (default 300)")
    ft.add_argument("--lr", action=number(float, lo=0, hi=10, lo_open=True), default=None,
                    help="learning rate (default 1e-4, with --lora 1e-3)")
    ft.add_argument("--batch-size", action=number(int, lo=1, most=1_000_000), default=None,
                    help="subject images per step, as many class images (default 4)")
    ft.add_argument("--seed", action=number(int, lo=0, most=SEED_MAX), default=None)
    ft.add_argument("--max-minutes", action=number(float, lo=0), default=None,
                    help="stop cleanly after this long (0 = no limit); rerun to resume")
    ft.add_argument("--quiet", action="store_true", help="no progress bars")
    ft.set_defaults(fn=cmd_finetune, resumable=True)


def cmd_finetune(args: argparse.Namespace) -> None:
    from inkfuse.train import train
    from inkfuse.train.finetune import finetune_recipe

    out = run_dir(args)
    given = {"prior_weight": args.prior_weight, "class_images": args.class_images,
             "lora": args.lora, "lora_alpha": args.lora_alpha, "steps": args.steps,
             "lr": args.lr, "batch_size": args.batch_size, "seed": args.seed,
             "max_minutes": args.max_minutes}
    config = finetune_recipe(existing_run(args.run_dir), out, args.images, args.prompt,
                             class_prompt=args.class_prompt,
                             **{k: v for k, v in given.items() if v is not None})
    train(config, out, progress=not args.quiet)
    what = (f"rank-{config.finetune.lora} adapters" if config.finetune.lora
            else "every weight")
    print(f"fine-tuned {what} of {args.run_dir} into {out} (sample with: inkfuse sample "
          f"{out} --prompt {config.finetune.prompt!r} --out samples.png)")
