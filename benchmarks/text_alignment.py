"""Does the picture show what the prompt asked? GenEval-style scores of a shapes text model.

Held-out prompts that were never training captions: every single-object prompt names a (kind,
colour, position) combination the training data never drew (`data.holdout`), and every
two-object prompt ("a small red circle above a large blue square") is a caption no training
image had. Each prompt is drawn N times per guidance weight, and the exact shapes checker
(`inkfuse.metrics.shapes_check`) reads every image back:

- single object: kind, colour, size, position, and all four at once;
- two objects: count (exactly two), binding (GenEval's colour attribution: each asked kind
  wears its asked colour), size (given the binding), relation (the first is above/below/left/
  right of the second as asked, given the binding), and all of them.

    python benchmarks/text_alignment.py runs/text --n 16 --guidance 1,2,4,8
    python benchmarks/text_alignment.py runs/unclip              # prompts through the prior
    python benchmarks/text_alignment.py runs/unclip --no-prior   # the same decoder, text fed in

Writes results/text_alignment.md, a picture of the first prompts at each weight, and per weight
the samples with their prompts (`-w{w}.npz` of uint8 images, `-w{w}.txt` one prompt per line).
A CLIP-image (unCLIP) run is scored through its diffusion prior when it has one, or with
`--no-prior` on the prompt's text embedding as the decoder's input (the course's trick), into
results/text_alignment-prior.md or -no-prior.md, whose title says which.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from inkfuse import pipelines, viz
from inkfuse.data.shapes import SIZES, ShapeSpec, caption, held_out, random_scenes, relation
from inkfuse.metrics.shapes_check import detect, match

RESULTS = Path(__file__).parent / "results"
OBJECT = ("kind", "colour", "size")


def training_captions(run: pipelines.Run) -> set[str]:
    """Every full caption the run trained on (the shapes generator is deterministic)."""
    d = run.config.data
    exclude = held_out(d.holdout) if d.holdout else frozenset()
    return {caption(s) for s in random_scenes(d.count, run.config.train.seed, d.max_objects,
                                              exclude)}


def single_prompts(run: pipelines.Run, seen: set[str], count: int, seed: int
                   ) -> list[tuple[str, dict]]:
    """Prompts for held-out (kind, colour, position) combinations, at a random size each."""
    rng = np.random.default_rng(seed)
    combos = sorted(held_out(run.config.data.holdout))
    if not combos:
        raise SystemExit("the run has no held-out combinations (data.holdout = 0): train with "
                         "e.g. --set data.holdout=0.1 so the test prompts are unseen")
    out = []
    for kind, colour, position in combos[:count]:
        size = list(SIZES)[rng.integers(len(SIZES))]
        prompt = f"a {size} {colour} {kind} in the {position}"
        assert prompt not in seen
        out.append((prompt, {"kind": kind, "colour": colour, "size": size,
                             "position": position}))
    return out


def pair_prompts(seen: set[str], count: int, seed: int) -> list[tuple[str, list[ShapeSpec]]]:
    """Two-object scenes whose caption no training image had."""
    out: list[tuple[str, list[ShapeSpec]]] = []
    for scene in random_scenes(50 * count, seed, max_objects=2):
        if len(scene) == 2 and caption(scene) not in seen:
            out.append((caption(scene), scene))
        if len(out) == count:
            break
    return out


def score_single(found: list, asked: dict) -> dict[str, bool]:
    got = match(found[:1], asked)
    return {**got, "all": all(got.values())}


def score_pair(found: list, scene: list[ShapeSpec]) -> dict[str, bool]:
    """Binding (GenEval's colour attribution): one pairing of asked and found objects puts the
    asked kind and colour on each; size: that pairing also has the asked sizes; relation: in it
    the first object sits where the prompt says relative to the second."""
    if len(found) != 2:
        return dict.fromkeys(("count", "binding", "size", "relation", "all"), False)

    def fits(pairing: list, attributes: tuple[str, ...]) -> bool:
        return all(f.get(a) == getattr(w, a) for f, w in zip(pairing, scene, strict=True)
                   for a in attributes)

    pairing = next((p for p in (found, found[::-1]) if fits(p, ("kind", "colour"))), None)
    binding = pairing is not None
    size = binding and fits(pairing, OBJECT)
    rel = binding and relation(*pairing) == relation(*scene)
    return {"count": True, "binding": binding, "size": size, "relation": rel,
            "all": size and rel}


def mean(rows: list[dict[str, bool]]) -> dict[str, float]:
    return {k: float(np.mean([r[k] for r in rows])) for k in rows[0]}


def save_samples(out: Path, w: float, images: torch.Tensor, prompts: list[str]) -> None:
    """OUT-w{w}.npz (uint8 `images` [N, C, H, W]) and OUT-w{w}.txt (the prompt of image i on
    line i), so that another checker can score the same samples."""
    stem = out.with_suffix("").name + f"-w{w:g}"
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(out.with_name(stem + ".npz"), images=images.numpy(), guidance=w)
    out.with_name(stem + ".txt").write_text("".join(q + "\n" for q in prompts))


def conditioning(run: pipelines.Run) -> str | None:
    """What a clip-image decoder is given for a prompt ("prior" or "no-prior"); None for the
    other text runs, which read the text themselves."""
    if run.config.data.labels != "clip-image":
        return None
    return "prior" if run.prior is not None else "no-prior"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run", help="a text-conditioned shapes run dir")
    p.add_argument("--n", type=int, default=16, help="images per prompt and weight")
    p.add_argument("--singles", type=int, default=29, help="single-object prompts")
    p.add_argument("--pairs", type=int, default=32, help="two-object prompts")
    p.add_argument("--guidance", default="1,2,4,8", help="comma-separated CFG weights")
    p.add_argument("--sampler", default="ddim")
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-prior", action="store_true",
                   help="a CLIP-image run: give the decoder the prompt's text embedding, not "
                        "its prior's image embedding (default: the prior, when the run has one)")
    p.add_argument("--out", default=None,
                   help="default results/text_alignment.md, or for a CLIP-image run "
                        "text_alignment-prior.md / -no-prior.md")
    args = p.parse_args()

    device = "cuda" if torch.cuda.is_available() else "cpu"
    run = pipelines.load_run(args.run, device=device, prior=not args.no_prior)
    mode = conditioning(run)
    if args.out is None:
        args.out = str(RESULTS / f"text_alignment{'-' + mode if mode else ''}.md")
    how = {None: "", "prior": " through its diffusion prior",
           "no-prior": " without a prior (the decoder reads the text embedding)"}[mode]
    seen = training_captions(run)
    singles = single_prompts(run, seen, args.singles, args.seed)
    pairs = pair_prompts(seen, args.pairs, 1_000_003 + args.seed)
    prompts = [q for q, _ in singles] + [q for q, _ in pairs]
    weights = [float(w) for w in args.guidance.split(",")]

    log = [json.loads(ln) for ln in (run.dir / "log.jsonl").read_text().splitlines()
           if ln.strip()]
    trained = f"{log[-1]['step']} steps in {log[-1]['seconds'] / 60:.1f} min"
    lines = [f"# Text alignment: {run.dir.name}{how}", "",
             f"Model trained {trained} on `{run.config.data.name}` "
             f"({run.config.text.conditioning} text conditioning{how}, {device}). "
             f"{len(singles)} single-object prompts with held-out (kind, colour, position) "
             f"combinations and {len(pairs)} unseen two-object captions, {args.n} images each, "
             f"{args.sampler} {args.steps} steps.", "",
             f"Command: `python benchmarks/text_alignment.py {args.run} --n {args.n} "
             f"--guidance {args.guidance} --sampler {args.sampler} --steps {args.steps}"
             f"{' --no-prior' if args.no_prior else ''}`", "",
             "| w | kind | colour | size | position | **single: all** | count | binding "
             "| size | relation | **two: all** | s/image |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    pictures = []
    for w in weights:
        t0 = time.monotonic()
        images = pipelines.sample(run, len(prompts) * args.n, prompts=prompts * args.n,
                                  sampler=args.sampler, steps=args.steps, guidance=w,
                                  seed=args.seed, progress=True, use_prior=not args.no_prior)
        per_image = (time.monotonic() - t0) / len(images)
        save_samples(Path(args.out), w, images, prompts * args.n)
        found = detect(images, max_objects=2)
        k = len(prompts)
        single = mean([score_single(found[r * k + i], asked) for r in range(args.n)
                       for i, (_, asked) in enumerate(singles)])
        pair = mean([score_pair(found[r * k + len(singles) + i], scene) for r in range(args.n)
                     for i, (_, scene) in enumerate(pairs)])
        lines.append(f"| {w:g} | {single['kind']:.3f} | {single['colour']:.3f} | "
                     f"{single['size']:.3f} | {single['position']:.3f} | **{single['all']:.3f}**"
                     f" | {pair['count']:.3f} | {pair['binding']:.3f} | {pair['size']:.3f} | "
                     f"{pair['relation']:.3f} | **{pair['all']:.3f}** | {per_image:.3f} |")
        print(lines[-1], flush=True)
        show = [0, 1, 2, len(singles), len(singles) + 1, len(singles) + 2]
        cols = min(8, args.n)
        pictures.append(torch.stack([images[r * k + i] for i in show for r in range(cols)]))
    picture = Path(args.out).with_suffix(".png")
    rows = [f"w={w:g}: {prompts[i]}" for w in weights for i in [0, 1, 2, len(singles),
                                                                 len(singles) + 1,
                                                                 len(singles) + 2]]
    viz.save_grid(torch.cat(pictures), picture, nrow=min(8, args.n), labels=rows)
    lines += ["", f"![samples per weight]({picture.name})", "",
              "Prompts: " + "; ".join(f"`{q}`" for q in prompts[:3] + prompts[len(singles):][:3])
              + " …", ""]
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text("\n".join(lines))
    print(f"wrote {args.out} and {picture}")


if __name__ == "__main__":
    main()
