"""Train the domain classifier that scores MNIST / Fashion-MNIST samples.

    python scripts/train_classifier.py --dataset mnist
    python scripts/train_classifier.py --dataset fashion-mnist

Trains `inkfuse.metrics.classifier.Classifier` on the train split (random 2-pixel shifts, plus
horizontal flips for Fashion-MNIST), evaluates it on the test split, and writes
`src/inkfuse/metrics/weights/<dataset>.safetensors` and `<dataset>.json` (architecture, test
accuracy, training command, date). Data comes from `inkfuse.data` ($INKFUSE_DATA or
--data-dir). A GPU is used when there is one (the shipped weights took under a minute each on
one). On an idle 2-core CPU an epoch takes about a minute, so the default 8 epochs (MNIST) take
~10 minutes and 20 (Fashion-MNIST) ~25; several times longer when the cores are shared.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import platform
import shlex
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from inkfuse.config import DataConfig
from inkfuse.data import build_dataset
from inkfuse.data.transforms import augment
from inkfuse.io import atomic_path
from inkfuse.metrics.classifier import DATASETS, WEIGHTS_DIR, Classifier

DEFAULT_EPOCHS = {"mnist": 8, "fashion-mnist": 20}


def evaluate(model: Classifier, images: torch.Tensor, labels: torch.Tensor,
             batch_size: int = 1000) -> float:
    model.eval()
    correct = 0
    with torch.inference_mode():
        for lo in range(0, len(images), batch_size):
            x = images[lo : lo + batch_size].float().div(127.5).sub(1)
            correct += (model(x).argmax(1) == labels[lo : lo + batch_size]).sum().item()
    return correct / len(images)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dataset", required=True, choices=DATASETS)
    p.add_argument("--epochs", type=int, default=None, help="default: 8 mnist, 20 fashion-mnist")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--weight-decay", type=float, default=5e-4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument("--data-dir", default=None, help="default: $INKFUSE_DATA or the user cache")
    p.add_argument("--out-dir", default=str(WEIGHTS_DIR))
    args = p.parse_args(argv)

    epochs = args.epochs or DEFAULT_EPOCHS[args.dataset]
    device = torch.device(("cuda" if torch.cuda.is_available() else "cpu")
                          if args.device == "auto" else args.device)
    torch.manual_seed(args.seed)
    gen = torch.Generator(device).manual_seed(args.seed)
    train = build_dataset(DataConfig(name=args.dataset, split="train", size=28),
                          data_dir=args.data_dir).to(device)
    test = build_dataset(DataConfig(name=args.dataset, split="test", size=28),
                         data_dir=args.data_dir).to(device)
    model = Classifier(num_classes=len(train.class_names) or 10).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    steps_per_epoch = math.ceil(len(train) / args.batch_size)
    total = epochs * steps_per_epoch
    warmup = steps_per_epoch // 2
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * s / total)))
    hflip = args.dataset == "fashion-mnist"  # clothes are left-right symmetric, digits are not
    start = time.time()
    for epoch in range(epochs):
        model.train()
        order = torch.randperm(len(train), generator=gen, device=device)
        running = 0.0
        for i in range(steps_per_epoch):
            idx = order[i * args.batch_size : (i + 1) * args.batch_size]
            x = augment(train.to_float(idx), hflip=hflip, crop_padding=2, generator=gen)
            loss = F.cross_entropy(model(x), train.labels[idx], label_smoothing=0.05)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            running += loss.item()
        acc = evaluate(model, test.images, test.labels)
        print(f"epoch {epoch + 1}/{epochs}: loss {running / steps_per_epoch:.4f}, "
              f"test accuracy {acc:.4f} ({time.time() - start:.0f} s)", flush=True)

    model = model.cpu().eval()
    acc = evaluate(model, test.images.cpu(), test.labels.cpu())
    out = Path(args.out_dir)
    weights, info_path = out / f"{args.dataset}.safetensors", out / f"{args.dataset}.json"
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    with atomic_path(weights) as tmp:
        save_file(state, str(tmp), metadata={"dataset": args.dataset, "format": "inkfuse-cls-1"})
    info = {
        "dataset": args.dataset,
        "architecture": model.arch,
        "parameters": sum(p.numel() for p in model.parameters()),
        "input": "1x28x28 in [-1, 1]; features = 128-d penultimate layer",
        "test_accuracy": round(acc, 6),
        "test_images": len(test),
        "training": {"epochs": epochs, "batch_size": args.batch_size, "lr": args.lr,
                     "weight_decay": args.weight_decay, "seed": args.seed,
                     "augment": "random 2-px shifts" + (", horizontal flips" if hflip else ""),
                     "label_smoothing": 0.05, "device": str(device),
                     "seconds": round(time.time() - start)},
        "command": "python scripts/train_classifier.py " + shlex.join(sys.argv[1:] if argv is None
                                                                      else argv),
        "date": datetime.date.today().isoformat(),
        "torch": torch.__version__,
        "python": platform.python_version(),
    }
    with atomic_path(info_path) as tmp:
        tmp.write_text(json.dumps(info, indent=2) + "\n")
    print(f"test accuracy {acc:.4f}; wrote {weights} and {info_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
