"""The shapes checker reads back the generator's ground truth, alone and in two-object scenes."""

from __future__ import annotations

import pytest
import torch

from inkfuse.data import shapes
from inkfuse.errors import DataError
from inkfuse.metrics import shapes_check as sc


def two_object_scenes(count: int, seed: int) -> list[list[shapes.ShapeSpec]]:
    """Pairs of generated objects that keep the generator's minimum gap (0.08 of the side)."""
    singles = [scene[0] for scene in shapes.random_scenes(4 * count, seed)]
    pairs = []
    for a, b in zip(singles[::2], singles[1::2], strict=True):
        reach = a.radius + b.radius + 0.08
        if abs(a.x - b.x) >= reach or abs(a.y - b.y) >= reach:
            pairs.append([a, b])
    return pairs[:count]


def agreement(images: torch.Tensor, scenes: list[list[shapes.ShapeSpec]]) -> dict[str, float]:
    """Per attribute, the share of objects read correctly (each true object is paired with the
    detected one nearest its centre; a wrong object count fails every attribute)."""
    found = sc.detect(images, max_objects=2)
    right = dict.fromkeys(sc.ATTRIBUTES, 0)
    total = 0
    for objs, scene in zip(found, scenes, strict=True):
        total += len(scene)
        if len(objs) != len(scene):
            continue
        for spec in scene:
            obj = min(objs, key=lambda o: (o.x - spec.x) ** 2 + (o.y - spec.y) ** 2)
            for a in sc.ATTRIBUTES:
                right[a] += obj.get(a) == getattr(spec, a)
    return {a: right[a] / total for a in sc.ATTRIBUTES}


@pytest.mark.parametrize("size, count", [(32, 1000), (64, 500)])
def test_single_objects_agree_with_ground_truth(size, count):
    images, scenes = shapes.generate_shapes(count, size, seed=7)
    result = agreement(images, scenes)
    assert min(result.values()) >= 0.99, result


@pytest.mark.parametrize("size, count", [(32, 500), (64, 250)])
def test_two_object_scenes_agree_with_ground_truth(size, count):
    scenes = two_object_scenes(count, seed=8)
    images = torch.stack([shapes.render(scene, size) for scene in scenes])
    result = agreement(images, scenes)
    assert min(result.values()) >= 0.99, result


def test_noisy_images_still_read():
    images, scenes = shapes.generate_shapes(100, 32, seed=9)
    x = images.float() / 127.5 - 1
    x = (x + 0.2 * torch.randn(x.shape, generator=torch.Generator().manual_seed(0))).clamp(-1, 1)
    accuracy = sc.attribute_accuracy(x, [scene[0] for scene in scenes], max_objects=1)
    assert min(accuracy.values()) >= 0.97, accuracy


def test_check_reports_each_asked_attribute():
    scene = [shapes.ShapeSpec("triangle", "orange", "large", 0.2, 0.75)]
    image = shapes.render(scene, 32)
    found = sc.detect(image)[0]
    assert [(o.kind, o.colour, o.size, o.position) for o in found] == [
        ("triangle", "orange", "large", "bottom left")]
    results = sc.check(image[None].expand(3, -1, -1, -1), [
        {"kind": "triangle", "colour": "orange"},
        {"kind": "circle", "position": "bottom left"},
        scene[0],
    ])
    assert results[0] == {"kind": True, "colour": True}
    assert results[1] == {"kind": False, "position": True}
    assert results[2] == {"kind": True, "colour": True, "size": True, "position": True}


def test_check_pairs_objects_in_a_scene():
    a = shapes.ShapeSpec("circle", "red", "small", 0.2, 0.2)
    b = shapes.ShapeSpec("cross", "blue", "large", 0.75, 0.75)
    image = shapes.render([a, b], 64)
    # order of the asked objects does not matter; a missing object fails its attributes
    assert sc.match(sc.detect(image)[0], [b, a]) == dict.fromkeys([*sc.ATTRIBUTES, "count"], True)
    alone = sc.detect(shapes.render([a], 64))[0]
    assert sc.match(alone, [{"kind": "circle"}, {"kind": "cross"}]) == {"kind": False,
                                                                         "count": False}
    with pytest.raises(DataError, match="unknown shape attribute 'shade'"):
        sc.match(alone, {"shade": "dark"})


def test_kind_accuracy_and_empty_images():
    images, scenes = shapes.generate_shapes(40, 32, seed=3)
    labels = torch.tensor([shapes.SHAPES.index(s[0].kind) for s in scenes])
    assert sc.kind_accuracy(images, labels) == 1.0
    assert sc.kind_accuracy(images, (labels + 1) % len(shapes.SHAPES)) == 0.0
    blank = torch.zeros(2, 3, 32, 32, dtype=torch.uint8)
    assert sc.detect(blank) == [[], []]
    assert sc.kind_accuracy(blank, [0, 1]) == 0.0
    with pytest.raises(DataError, match=r"class ids must lie in 0..3"):
        sc.kind_accuracy(blank, [0, 9])
    with pytest.raises(DataError, match="needs RGB images"):
        sc.detect(torch.zeros(2, 1, 32, 32, dtype=torch.uint8))
    with pytest.raises(DataError, match="2 images but 3 labels"):
        sc.kind_accuracy(blank, [0, 1, 2])
