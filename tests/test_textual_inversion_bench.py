"""benchmarks/textual_inversion.py: the scenes it renders and asks for, and its scoring, against
the generator's own images (the checker reads those right, so every verdict is known)."""

from __future__ import annotations

import dataclasses
import importlib.util
import sys
from pathlib import Path

import pytest
import torch

from inkfuse.data.shapes import render
from inkfuse.metrics.shapes_check import detect

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCH))  # it imports text_alignment beside it, as a script does
spec = importlib.util.spec_from_file_location("textual_inversion", BENCH / "textual_inversion.py")
bench = importlib.util.module_from_spec(spec)
spec.loader.exec_module(bench)


@pytest.mark.parametrize("word", ["magenta", "cross"])
def test_scenes_show_the_word_on_the_first_object_only(word: str) -> None:
    attr = bench.category(word)
    withheld = [word, "cyan"]
    singles = bench.scenes_with(word, withheld, 40, 0, 1)
    pairs = bench.scenes_with(word, withheld, 40, 0, 2)
    assert all(len(s) == 1 and getattr(s[0], attr) == word for s in singles)
    assert all(len(s) == 2 and getattr(s[0], attr) == word for s in pairs)
    objects = [o for s in singles + pairs for o in s]
    assert not any(o.colour == "cyan" for o in objects)  # the run's other withheld word
    assert not any(getattr(s[1], attr) == word for s in pairs)
    other = "colour" if attr == "kind" else "kind"  # random, as sizes and positions are
    assert len({getattr(s[0], other) for s in singles}) > 2
    assert len({s[0].position for s in singles}) > 3 and len({s[0].size for s in singles}) == 2


def test_the_token_takes_the_words_place() -> None:
    scene = bench.scenes_with("magenta", ["magenta"], 1, 3, 2)[0]
    prompt = bench.named(scene, "magenta", "<m>")
    assert "magenta" not in prompt and prompt.count("<m>") == 1
    assert prompt.split()[:2] in (["a", "small"], ["a", "large"]) and prompt.split()[2] == "<m>"


def test_scores_of_drawn_scenes_and_of_the_wrong_colour() -> None:
    singles = bench.scenes_with("magenta", ["magenta"], 12, 1, 1)
    pairs = bench.scenes_with("magenta", ["magenta"], 12, 2, 2)
    for scenes in (singles, pairs):
        right = detect(torch.stack([render(s, 32) for s in scenes]))
        assert all(all(bench.score(f, s, "magenta").values()) for f, s in zip(right, scenes,
                                                                               strict=True))
        red = [[dataclasses.replace(s[0], colour="red"), *s[1:]] for s in scenes]
        wrong = detect(torch.stack([render(s, 32) for s in red]))
        assert not any(any(bench.score(f, s, "magenta").values())
                       for f, s in zip(wrong, scenes, strict=True))
    # the right colour on the other object of a pair is not "on the right object"
    a, b = pair = next(p for p in pairs if p[0].kind != p[1].kind)
    swapped = [dataclasses.replace(a, colour=b.colour), dataclasses.replace(b, colour="magenta")]
    found = detect(torch.stack([render(swapped, 32)]))[0]
    assert bench.score(found, pair, "magenta") == {"on object": False, "all": False}
