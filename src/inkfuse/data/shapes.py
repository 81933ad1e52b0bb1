"""Shapes: a built-in dataset of coloured geometric shapes on black, each with a caption.

It needs no download, any size works, and every image comes with its ground truth (kind, colour,
size, position), so a model conditioned on classes, context vectors or text can be checked by
measuring what it drew. A scene is one or two `ShapeSpec`s; the same seed gives the same scenes at
every image size, and the first k scenes of a longer run are the k scenes of a shorter one.

Class ids, context entries and palette order are fixed by the constants below; a checker and a
trained model both depend on them, so only append to them.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import torch
from PIL import Image, ImageDraw

from inkfuse.config.sections import COLOURS as COLOUR_NAMES
from inkfuse.config.sections import SHAPES  # class id = index
from inkfuse.data.dataset import CaptionVariants, ImageDataset

COLOURS = dict(zip(COLOUR_NAMES, (  # RGB, saturated so the nearest palette entry is never in doubt
    (255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0), (255, 0, 255), (0, 255, 255),
    (255, 255, 255), (255, 128, 0),
), strict=True))
BACKGROUND = (0, 0, 0)
SIZES = {"small": 0.14, "large": 0.22}  # half the shape's width, as a fraction of the image side
ROWS = ("top", "middle", "bottom")
COLUMNS = ("left", "center", "right")
POSITIONS = tuple(  # the 3 x 3 grid in row-major order: "top left" ... "center" ... "bottom right"
    "center" if (row, col) == ("middle", "center") else f"{row} {col}"
    for row in ROWS for col in COLUMNS
)
CONTEXT_NAMES = (*SHAPES, *COLOURS)  # context vector = multi-hot over kinds, then colours

_CELL_CENTRES = (0.2, 0.5, 0.8)
_JITTER = 0.08  # centres move at most this far from their cell's centre: never out of the cell
_GAP = 0.07  # minimum space between two objects' boxes (> 1 px from 16 px up)
_CROSS_ARM = 0.35  # half the thickness of a cross's bars, relative to its radius


@dataclass(frozen=True)
class ShapeSpec:
    """One object. x, y: its centre as fractions of the image side (y grows downwards); its
    bounding box is the square of half-width `radius` around the centre."""

    kind: str
    colour: str
    size: str
    x: float
    y: float

    @property
    def radius(self) -> float:
        return SIZES[self.size]

    @property
    def position(self) -> str:
        """The cell of the 3 x 3 grid that holds the centre, e.g. "top left"."""
        return POSITIONS[3 * min(int(self.y * 3), 2) + min(int(self.x * 3), 2)]


def held_out(fraction: float) -> frozenset[tuple[str, str, str]]:
    """A fixed `fraction` of all (kind, colour, position) combinations, the same for every seed
    and size: training data without them lets a benchmark ask for combinations no caption had."""
    combos = [(k, c, p) for k in SHAPES for c in COLOURS for p in POSITIONS]
    order = np.random.default_rng(20_221_123).permutation(len(combos))
    return frozenset(combos[i] for i in order[:round(fraction * len(combos))])


def excluded(holdout: float = 0.0, withhold: tuple[str, ...] | list[str] = ()
             ) -> frozenset[tuple[str, str, str]]:
    """The (kind, colour, position) combinations a dataset never draws: the `held_out(holdout)`
    ones, and every one whose kind or colour is `withhold`n, so that a model trained on it has
    never seen that kind or colour at all (textual inversion's honest test)."""
    combos = held_out(holdout) if holdout else frozenset()
    if withhold:
        combos |= {(k, c, p) for k in SHAPES for c in COLOURS for p in POSITIONS
                   if k in withhold or c in withhold}
    return frozenset(combos)


def random_scenes(count: int, seed: int = 0, max_objects: int = 1,
                  exclude: frozenset[tuple[str, str, str]] = frozenset()
                  ) -> list[list[ShapeSpec]]:
    """`count` scenes, each of 1 to `max_objects` (1 or 2, equally likely) objects that never
    touch, and none of whose objects is an `exclude`d (kind, colour, position)."""
    rng = np.random.default_rng(seed)

    def spec() -> ShapeSpec:
        s = _random_spec(rng)
        while (s.kind, s.colour, s.position) in exclude:
            s = _random_spec(rng)
        return s

    scenes = []
    for _ in range(count):
        scene = [spec()]
        if max_objects > 1 and rng.random() < 0.5:
            # redraw both until they fit: about 2 tries, and no pair is impossible to complete
            scene.append(spec())
            while _overlap(*scene):
                scene = [spec(), spec()]
        scenes.append(scene)
    return scenes


def _pick(options: tuple, u: float):
    return options[int(u * len(options))]


def _random_spec(rng: np.random.Generator) -> ShapeSpec:
    u = rng.random(7)  # one RNG call per object, not one per attribute: same distribution
    size = _pick(tuple(SIZES), u[2])
    r = SIZES[size]
    x, y = (
        float(min(max(_pick(_CELL_CENTRES, cell) + _JITTER * (2 * d - 1), r), 1 - r))
        for cell, d in ((u[3], u[4]), (u[5], u[6]))
    )
    return ShapeSpec(_pick(SHAPES, u[0]), _pick(tuple(COLOURS), u[1]), size, x, y)


def _overlap(a: ShapeSpec, b: ShapeSpec) -> bool:
    reach = a.radius + b.radius + _GAP
    return abs(a.x - b.x) < reach and abs(a.y - b.y) < reach


def relation(a: ShapeSpec, b: ShapeSpec) -> str:
    """Where `a` is relative to `b`, along the axis on which they are further apart."""
    dx, dy = b.x - a.x, b.y - a.y
    if abs(dx) >= abs(dy):
        return "to the left of" if dx > 0 else "to the right of"
    return "above" if dy > 0 else "below"


KEEPS = tuple((size, colour, position) for size in (True, False) for colour in (True, False)
              for position in (True, False))  # which attributes a caption variant mentions


def _describe(spec: ShapeSpec, size: bool, colour: bool) -> str:
    words = [spec.size if size else "", spec.colour if colour else "", spec.kind]
    return " ".join(["a", *filter(None, words)])


def caption(scene: list[ShapeSpec], keep: tuple[bool, bool, bool] = (True, True, True)) -> str:
    """"a large red circle in the top left" or "a small red circle above a large blue square".

    `keep` = (size, colour, position): which attributes to mention. Two objects always keep
    their relation, the only thing that tells them apart."""
    first = scene[0]
    if len(scene) == 1:
        where = f" in the {first.position}" if keep[2] else ""
        return _describe(first, *keep[:2]) + where
    return (f"{_describe(first, *keep[:2])} {relation(first, scene[1])} "
            f"{_describe(scene[1], *keep[:2])}")


def caption_variants(scene: list[ShapeSpec]) -> list[str]:
    """The scene's caption with every subset of (size, colour, position) left out, in KEEPS
    order. A text model trained only on full captions embeds "a red circle" poorly: it never
    saw a prompt end that early."""
    return [caption(scene, keep) for keep in KEEPS]


MAX_HARD_NEGATIVES = 4  # what `hard_negatives` returns at most


def hard_negatives(scene: list[ShapeSpec], keep: tuple[bool, bool, bool] = (True, True, True)
                   ) -> dict[str, str]:
    """Captions that differ from `caption(scene, keep)` only in what binds to what (NegCLIP,
    Yuksekgonul et al. 2023), by what was changed. Two objects: colour, size or kind swapped
    between them ("a blue circle above a red square" for "a red circle above a blue square"),
    or their places swapped, which reverses the relation. One object: each attribute the caption
    mentions changed to the next value (kind always; position mirrored through the centre).
    Changes that leave the caption as it was (two red objects, a colour not mentioned) are left
    out.

    Contrastive training otherwise sees only the batch's other captions, and a bag of words is
    enough to tell those apart; these negatives have the positive's bag of words."""
    if len(scene) == 1:
        (s,) = scene
        step = lambda options, value: options[(options.index(value) + 1) % len(options)]  # noqa: E731
        changes = {"kind": dict(kind=step(SHAPES, s.kind)),
                   "size": dict(size=step(tuple(SIZES), s.size)),
                   "colour": dict(colour=step(tuple(COLOURS), s.colour)),
                   "position": dict(x=1 - s.x, y=1 - s.y)}
        scenes = {name: [replace(s, **change)] for name, change in changes.items()}
    else:
        a, b = scene
        swaps = {"colour": ("colour",), "size": ("size",), "kind": ("kind",),
                 "relation": ("x", "y")}
        scenes = {name: [replace(a, **{f: getattr(b, f) for f in fs}),
                         replace(b, **{f: getattr(a, f) for f in fs})]
                  for name, fs in swaps.items()}
    positive, out = caption(scene, keep), {}
    for name, changed in scenes.items():
        negative = caption(changed, keep)
        if negative != positive and negative not in out.values():
            out[name] = negative
    return out


def variant_probs(dropout: float) -> torch.Tensor:
    """P(each KEEPS entry) when every attribute is left out independently with `dropout`."""
    p = 1 - dropout
    return torch.tensor([float(np.prod([p if k else dropout for k in keep])) for keep in KEEPS])


def _draw(scene: list[ShapeSpec], size: int) -> np.ndarray:
    """uint8 [3, size, size]. Drawn at >= 128 px (at least 2x), then box-downsampled: exact area
    coverage at the edges."""
    scale = max(2, -(-128 // size))
    side = size * scale
    image = Image.new("RGB", (side, side), BACKGROUND)
    draw = ImageDraw.Draw(image)
    for spec in scene:
        x, y, r = spec.x * side, spec.y * side, spec.radius * side
        fill = COLOURS[spec.colour]
        if spec.kind == "circle":
            draw.ellipse((x - r, y - r, x + r, y + r), fill)
        elif spec.kind == "square":
            draw.rectangle((x - r, y - r, x + r, y + r), fill)
        elif spec.kind == "triangle":
            draw.polygon([(x, y - r), (x + r, y + r), (x - r, y + r)], fill)
        else:
            t = r * _CROSS_ARM
            draw.rectangle((x - r, y - t, x + r, y + t), fill)
            draw.rectangle((x - t, y - r, x + t, y + r), fill)
    return np.asarray(image.reduce(scale)).transpose(2, 0, 1)


def render(scene: list[ShapeSpec], size: int) -> torch.Tensor:
    """One scene as uint8 [3, size, size]."""
    return torch.from_numpy(_draw(scene, size).copy())


def generate_shapes(
    count: int, size: int, seed: int = 0, max_objects: int = 1, holdout: float = 0.0,
    withhold: tuple[str, ...] | list[str] = (),
) -> tuple[torch.Tensor, list[list[ShapeSpec]]]:
    """`count` random scenes rendered at `size`: (uint8 [N, 3, size, size], scenes), without
    the `excluded(holdout, withhold)` combinations."""
    scenes = random_scenes(count, seed, max_objects, excluded(holdout, withhold))
    images = np.empty((count, 3, size, size), np.uint8)
    for i, scene in enumerate(scenes):
        images[i] = _draw(scene, size)
    return torch.from_numpy(images), scenes


def load(count: int, size: int, seed: int = 0, max_objects: int = 1,
         caption_dropout: float = 0.0, holdout: float = 0.0,
         withhold: tuple[str, ...] | list[str] = ()) -> ImageDataset:
    """The shapes dataset: class = kind of the first object; context = multi-hot kinds and colours
    of all objects (2 ones for one object, up to 4 for two); one caption per image, and with
    `caption_dropout` its shorter variants to draw from in training."""
    images, scenes = generate_shapes(count, size, seed, max_objects, holdout, withhold)
    context = np.zeros((count, len(CONTEXT_NAMES)), np.float32)
    for i, scene in enumerate(scenes):
        for spec in scene:
            context[i, CONTEXT_NAMES.index(spec.kind)] = 1
            context[i, CONTEXT_NAMES.index(spec.colour)] = 1
    variants = None
    if caption_dropout > 0:
        variants = CaptionVariants([caption_variants(s) for s in scenes],
                                   variant_probs(caption_dropout))
    return ImageDataset(
        images,
        labels=torch.tensor([SHAPES.index(scene[0].kind) for scene in scenes], dtype=torch.int64),
        context=torch.from_numpy(context),
        captions=[caption(scene) for scene in scenes],
        class_names=list(SHAPES),
        context_names=list(CONTEXT_NAMES),
        name="shapes",
        caption_variants=variants,
    )
