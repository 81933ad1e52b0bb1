import pytest
import torch

from inkfuse.data import shapes
from inkfuse.data.shapes import COLOURS, CONTEXT_NAMES, POSITIONS, SHAPES


def test_same_seed_same_bytes_and_prefix_stable():
    a, scenes = shapes.generate_shapes(40, 32, seed=1, max_objects=2)
    b, _ = shapes.generate_shapes(40, 32, seed=1, max_objects=2)
    c, _ = shapes.generate_shapes(40, 32, seed=2, max_objects=2)
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert shapes.random_scenes(10, seed=1, max_objects=2) == scenes[:10]


def test_every_size_from_16_to_128():
    scenes = shapes.random_scenes(2, seed=3, max_objects=2)
    for size in range(16, 129):
        for scene in scenes:
            image = shapes.render(scene, size)
            assert image.shape == (3, size, size) and image.dtype == torch.uint8
            assert image.numpy().max() == 255  # the objects are really drawn


def test_captions_match_records():
    ds = shapes.load(300, 16, seed=4, max_objects=2)
    scenes = shapes.random_scenes(300, seed=4, max_objects=2)
    assert {len(scene) for scene in scenes} == {1, 2}
    for text, scene in zip(ds.captions, scenes, strict=True):
        a = scene[0]
        head = f"a {a.size} {a.colour} {a.kind} "
        assert text.startswith(head)
        if len(scene) == 1:
            row = "top" if a.y < 1 / 3 else "bottom" if a.y > 2 / 3 else "middle"
            col = "left" if a.x < 1 / 3 else "right" if a.x > 2 / 3 else "center"
            name = "center" if (row, col) == ("middle", "center") else f"{row} {col}"
            assert a.position == name and name in POSITIONS
            assert text == f"{head}in the {name}"
        else:
            b = scene[1]
            tail = f" a {b.size} {b.colour} {b.kind}"
            assert text.endswith(tail)
            relation = text.removeprefix(head).removesuffix(tail)
            dx, dy = b.x - a.x, b.y - a.y
            vertical = abs(dy) > abs(dx)
            assert {
                "above": vertical and dy > 0, "below": vertical and dy < 0,
                "to the left of": not vertical and dx > 0,
                "to the right of": not vertical and dx < 0,
            }[relation]


def test_labels_and_context():
    ds = shapes.load(300, 16, seed=5, max_objects=2)
    scenes = shapes.random_scenes(300, seed=5, max_objects=2)
    assert ds.class_names == list(SHAPES) and ds.context_names == list(CONTEXT_NAMES)
    assert ds.labels.dtype == torch.int64 and ds.labels.min() >= 0 and ds.labels.max() < 4
    assert ds.context.shape == (300, len(SHAPES) + len(COLOURS))
    for label, vector, scene in zip(ds.labels, ds.context, scenes, strict=True):
        assert SHAPES[label] == scene[0].kind
        hot = {CONTEXT_NAMES[i] for i in vector.nonzero().flatten()}
        assert hot == {s.kind for s in scene} | {s.colour for s in scene}
        if len(scene) == 1:
            assert vector.sum() == 2


def test_two_objects_never_touch():
    scenes = [s for s in shapes.random_scenes(200, seed=6, max_objects=2) if len(s) == 2]
    for size in (16, 32):
        for scene in scenes:
            a, b = (shapes.render([spec], size) for spec in scene)
            assert not ((a.amax(0) > 0) & (b.amax(0) > 0)).any()
            assert torch.equal(shapes.render(scene, size), a + b)


def test_dominant_colour_is_the_palette_colour():
    images, scenes = shapes.generate_shapes(100, 32, seed=7)
    for image, (spec,) in zip(images, scenes, strict=True):
        pixels = image.flatten(1).T
        pixels = pixels[pixels.amax(1) > 0]
        values, counts = pixels.unique(dim=0, return_counts=True)
        assert tuple(values[counts.argmax()].tolist()) == COLOURS[spec.colour]


def test_caption_variants_leave_out_attributes_and_keep_relations():
    one = [shapes.ShapeSpec("circle", "red", "small", 0.2, 0.2)]
    two = [*one, shapes.ShapeSpec("square", "blue", "large", 0.2, 0.8)]
    assert shapes.caption_variants(one)[0] == "a small red circle in the top left"
    assert shapes.caption_variants(one)[-1] == "a circle"
    assert shapes.caption(two, (False, True, False)) == "a red circle above a blue square"
    assert all("above" in c for c in shapes.caption_variants(two))
    probs = shapes.variant_probs(0.25)
    assert probs.sum().item() == pytest.approx(1.0) and probs[0].item() == pytest.approx(0.75**3)
    ds = shapes.load(50, 16, seed=0, caption_dropout=0.25)
    assert ds.caption_variants.texts[3][0] == ds.captions[3]


def test_held_out_combinations_never_appear():
    gone = shapes.held_out(0.1)
    assert len(gone) == round(0.1 * len(SHAPES) * len(COLOURS) * len(POSITIONS))
    assert gone == shapes.held_out(0.1) and shapes.held_out(0.0) == frozenset()
    scenes = shapes.random_scenes(3000, seed=5, max_objects=2, exclude=gone)
    assert not any((s.kind, s.colour, s.position) in gone for scene in scenes for s in scene)


def test_hard_negatives_bind_the_same_words_differently():
    from inkfuse.data.shapes import KEEPS, ShapeSpec, caption, hard_negatives

    red = ShapeSpec("circle", "red", "small", 0.5, 0.2)
    blue = ShapeSpec("square", "blue", "large", 0.5, 0.8)
    assert caption([red, blue]) == "a small red circle above a large blue square"
    assert hard_negatives([red, blue]) == {
        "colour": "a small blue circle above a large red square",
        "size": "a large red circle above a small blue square",
        "kind": "a small red square above a large blue circle",
        "relation": "a small red circle below a large blue square"}
    # a swap that the caption cannot show is no negative: no colours and sizes mentioned
    assert hard_negatives([red, blue], KEEPS[-1]) == {
        "kind": "a square above a circle", "relation": "a circle below a square"}
    twin = ShapeSpec("circle", "red", "small", 0.5, 0.8)  # same words: only the relation is left
    assert hard_negatives([red, twin]) == {
        "relation": "a small red circle below a small red circle"}
    assert hard_negatives([ShapeSpec("cross", "white", "large", 0.2, 0.2)]) == {
        "kind": "a large white circle in the top left",
        "size": "a small white cross in the top left",
        "colour": "a large orange cross in the top left",
        "position": "a large white cross in the bottom right"}
    centre = ShapeSpec("cross", "white", "large", 0.5, 0.5)  # mirrored onto itself
    assert "position" not in hard_negatives([centre])


def test_withheld_words_never_appear_in_images_or_captions():
    """data.withhold: no object of that colour or kind, in any scene, pixel or caption (what
    textual inversion is measured on); the other colours and kinds all still appear."""
    ds = shapes.load(400, 16, seed=5, max_objects=2, withhold=["magenta", "cross"])
    assert not any("magenta" in c or "cross" in c for c in ds.captions)
    seen = {w for c in ds.captions for w in c.split()}
    assert {"red", "cyan", "circle", "triangle"} <= seen
    pixels = ds.images.permute(0, 2, 3, 1).reshape(-1, 3)
    assert not (pixels == torch.tensor(COLOURS["magenta"], dtype=torch.uint8)).all(1).any()
