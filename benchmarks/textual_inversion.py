"""Does textual inversion teach a run a colour (or kind) it never saw? An honest measurement.

The run must have been trained with `data.withhold = [WORD]`: no image and no caption, the
CLIP's included, ever showed WORD, so the text encoder has no embedding for it and the U-Net
never drew it on request. The benchmark

1. renders `--images` single objects of WORD (random kinds or colours, sizes, positions) and
   captions them with WORD replaced by the token ("a small <magenta> circle in the top left"),
   as a folder with captions.csv;
2. learns the token from them with `inkfuse invert` itself (timed; `--force`: an earlier token
   of the same name in RUN/tokens is replaced);
3. samples prompts that use the token, single objects (every kind, size and position, random)
   and two objects ("a <magenta> square above a red circle"), and the same prompts with the
   init word in the token's place as the baseline (what the row started from);
4. reads every image back with the exact shapes checker (`metrics.shapes_check`):
   single object: WORD shown, WORD on the asked object (with its asked kind or colour), all four
   attributes right; two objects: WORD on the right object (the one the token names, with its
   asked kind or colour), and everything right (both objects' kinds, colours and sizes, and the
   relation, as `text_alignment.py` scores it).

    python benchmarks/textual_inversion.py runs/nomagenta --withheld magenta --images 8

Writes results/textual_inversion.md, a picture (the training images, then rows of samples per
prompt with the token and with the init word) and the training images' folder beside it.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from text_alignment import score_pair

from inkfuse import pipelines, viz
from inkfuse.cli import main as inkfuse
from inkfuse.data.shapes import COLOURS, SHAPES, ShapeSpec, caption, excluded, random_scenes, render
from inkfuse.metrics.shapes_check import detect, match

RESULTS = Path(__file__).parent / "results"


def category(word: str) -> str:
    """The attribute `word` is a value of: "kind" or "colour"."""
    if word in SHAPES:
        return "kind"
    if word in COLOURS:
        return "colour"
    raise SystemExit(f"--withheld {word!r} is not a shapes kind or colour "
                     f"({', '.join((*SHAPES, *COLOURS))})")


def scenes_with(word: str, withheld: list[str], count: int, seed: int, objects: int
                ) -> list[list[ShapeSpec]]:
    """`count` scenes of `objects` objects whose first object shows `word` and whose others
    show nothing the run withheld."""
    attr = category(word)
    if objects == 1:  # everything of the attribute but `word` excluded, and the run's others
        others = [w for w in (SHAPES if attr == "kind" else COLOURS) if w != word]
        gone = excluded(withhold=[*others, *(w for w in withheld if w != word)])
        return random_scenes(count, seed, 1, gone)
    out = []
    for scene in random_scenes(50 * count, seed, 2, excluded(withhold=withheld)):
        if len(scene) == 2:  # the first object made `word`, its place and size kept
            out.append([dataclasses.replace(scene[0], **{attr: word}), scene[1]])
        if len(out) == count:
            return out
    raise SystemExit(f"found only {len(out)} two-object scenes; lower --pairs")


def named(scene: list[ShapeSpec], word: str, name: str) -> str:
    """The scene's caption with `word` written as `name` (the token, or the init word)."""
    return " ".join(name if w == word else w for w in caption(scene).split())


def write_images(folder: Path, scenes: list[list[ShapeSpec]], size: int, word: str,
                 token: str) -> torch.Tensor:
    """The training images as PNG files with captions.csv; returns them, uint8 [N, 3, S, S]."""
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("*.png"):
        old.unlink()
    images = torch.stack([render(s, size) for s in scenes])
    with open(folder / "captions.csv", "w", newline="") as f:
        rows = csv.writer(f)
        rows.writerow(["path", "caption"])
        for i, (scene, image) in enumerate(zip(scenes, images, strict=True)):
            Image.fromarray(image.permute(1, 2, 0).numpy()).save(folder / f"{i}.png")
            rows.writerow([f"{i}.png", named(scene, word, token)])
    return images


def score(found: list, scene: list[ShapeSpec], word: str) -> dict[str, bool]:
    """The checker's verdicts on one image of `scene` (see the module docstring)."""
    attr = category(word)
    other = "colour" if attr == "kind" else "kind"
    target = {attr: word, other: getattr(scene[0], other)}
    if len(scene) == 1:
        got = match(found[:1], {**target, "size": scene[0].size,
                                "position": scene[0].position})
        return {"shown": got[attr], "on object": got[attr] and got[other],
                "all": all(got.values())}
    on_object = all(match(found, [target]).values())
    return {"on object": on_object, "all": score_pair(found, scene)["all"]}


def mean(rows: list[dict[str, bool]]) -> dict[str, float]:
    return {k: float(np.mean([r[k] for r in rows])) for k in rows[0]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run", help="a text shapes run trained with data.withhold = [WORD]")
    p.add_argument("--withheld", default="magenta", help="the withheld colour or kind")
    p.add_argument("--images", type=int, default=8, help="training images for the inversion")
    p.add_argument("--token", default=None, help="default '<WORD>'")
    p.add_argument("--init", default=None, help="word the token starts from and the baseline "
                   "(default: the first other word of the same attribute: red, or circle)")
    p.add_argument("--steps", type=int, default=None, help="inversion steps (default: "
                   "inkfuse invert's)")
    p.add_argument("--lr", type=float, default=None, help="inversion learning rate (default: "
                   "inkfuse invert's)")
    p.add_argument("--singles", type=int, default=128, help="single-object prompts")
    p.add_argument("--pairs", type=int, default=128, help="two-object prompts")
    p.add_argument("--n", type=int, default=1, help="images per prompt")
    p.add_argument("--guidance", type=float, default=None, help="default: the recipe's")
    p.add_argument("--sampler", default="ddim")
    p.add_argument("--sampler-steps", type=int, default=50)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=str(RESULTS / "textual_inversion.md"))
    args = p.parse_args()

    word, out = args.withheld, Path(args.out)
    attr = category(word)
    run = pipelines.load_run(args.run, tokens=False)
    withheld = list(run.config.data.withhold)
    if word not in withheld:
        raise SystemExit(f"{args.run} was trained with data.withhold = {withheld}: it has seen "
                         f"{word!r}, so learning it measures nothing; train with "
                         f"--set data.withhold=['{word}']")
    token = args.token or f"<{word}>"
    init = args.init or next(w for w in (SHAPES if attr == "kind" else COLOURS)
                             if w not in withheld)
    size = run.config.data.size

    # 1-2: the training images, then the inversion through the command itself
    folder = out.with_name(out.stem + "-images")
    train_images = write_images(folder, scenes_with(word, withheld, args.images, args.seed, 1),
                                size, word, token)
    command = ["invert", str(args.run), "--images", str(folder), "--token", token, "--init",
               init, "--seed", str(args.seed), "--force"]
    for flag, value in (("--steps", args.steps), ("--lr", args.lr)):
        if value is not None:
            command += [flag, str(value)]
    t0 = time.monotonic()
    if inkfuse(command):
        raise SystemExit("inkfuse invert failed (its message is above)")
    seconds = time.monotonic() - t0

    # 3-4: prompts with the token and with the init word, scored by the checker
    device = "cuda" if torch.cuda.is_available() else "cpu"
    run = pipelines.load_run(args.run, device=device)
    guidance = run.config.sample.guidance if args.guidance is None else args.guidance
    singles = scenes_with(word, withheld, args.singles, args.seed + 1, 1)
    pairs = scenes_with(word, withheld, args.pairs, args.seed + 2, 2)
    scenes = singles + pairs
    options = dict(sampler=args.sampler, steps=args.sampler_steps, guidance=guidance,
                   seed=args.seed, progress=True)
    rows, k = {}, len(scenes)
    for name in (token, init):
        prompts = [named(s, word, name) for s in scenes]
        images = pipelines.sample(run, k * args.n, prompts=prompts * args.n, **options)
        found = detect(images, max_objects=2)
        rows[name] = (mean([score(found[r * k + i], s, word) for r in range(args.n)
                            for i, s in enumerate(singles)]),
                      mean([score(found[r * k + len(singles) + i], s, word)
                            for r in range(args.n) for i, s in enumerate(pairs)]))
        print(name, rows[name], flush=True)

    # the picture: (up to 8 of) the training images, then 8 samples of a few prompts with each
    # word, a row each
    show = singles[:3] + pairs[:3]
    first = torch.full((8, *train_images.shape[1:]), -1.0)  # black where there are fewer
    first[:len(train_images[:8])] = train_images[:8].float() / 127.5 - 1
    picture, labels = [first], ["training images"]
    for name in (token, init):
        prompts = [named(s, word, name) for s in show]
        picture.append(pipelines.sample(run, 8 * len(show), prompts=[q for q in prompts
                                                                      for _ in range(8)],
                                        **options | {"seed": args.seed + 1}))
        labels += prompts
    grid = out.with_suffix(".png")
    viz.save_grid(torch.cat(picture), grid, nrow=8, labels=labels)

    lines = [f"# Textual inversion: {Path(args.run).name}, withheld {attr} `{word}`", "",
             f"`{args.run}` was trained with `data.withhold = {withheld}`. The token `{token}` "
             f"was learned from {args.images} rendered {word} objects (`{folder.name}/`), "
             f"starting from `{init}`, with `{' '.join(['inkfuse', *command])}` in "
             f"{seconds:.0f} s on {device}. Then {len(singles)} single-object and "
             f"{len(pairs)} two-object prompts, {args.n} image(s) each, {args.sampler} "
             f"{args.sampler_steps} steps, guidance {guidance:g}; the baseline writes `{init}` "
             f"where the token was (the word `{word}` itself is refused: the run never read "
             "it).", "",
             f"Command: `python benchmarks/textual_inversion.py {args.run} --withheld {word} "
             f"--images {args.images}" + (f" --steps {args.steps}" if args.steps else "")
             + (f" --lr {args.lr:g}" if args.lr else "")
             + f" --singles {args.singles} --pairs {args.pairs} --n {args.n}`", "",
             f"| prompt word | single: {word} shown | single: {word} on the asked object | "
             f"**single: all four** | two: {word} on the right object | **two: all** |",
             "|---|---|---|---|---|---|"]
    for name, (single, pair) in rows.items():
        what = f"token `{name}`" if name == token else f"init word `{name}` (baseline)"
        lines.append(f"| {what} | {single['shown']:.1%} | {single['on object']:.1%} | "
                     f"**{single['all']:.1%}** | {pair['on object']:.1%} | "
                     f"**{pair['all']:.1%}** |")
    lines += ["", f"![training images, then samples with the token and with `{init}`]"
              f"({grid.name})", "", "Prompts: " + "; ".join(
                  f"`{named(s, word, token)}`" for s in show), ""]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines))
    print(f"wrote {out} and {grid}")


if __name__ == "__main__":
    main()
