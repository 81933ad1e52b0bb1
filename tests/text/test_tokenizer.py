"""The BPE tokenizer: exact round-trips, learned merges, prompt errors, unknown words."""

from __future__ import annotations

import json

import pytest
import torch

from inkfuse.errors import ConfigError
from inkfuse.text.tokenizer import BPETokenizer, check_prompt, normalize

CAPTIONS = ["a large red circle in the top left", "a small blue square in the center",
            "a large green triangle in the bottom right", "a small white cross in the top left"]


@pytest.fixture(scope="module")
def tok() -> BPETokenizer:
    return BPETokenizer.train(CAPTIONS * 10, vocab_size=400)


@pytest.mark.parametrize("text", [
    "a red circle", "Héllo  wörld\t😀 — ‘quotes’ 12ab_x__y\n", "日本語のテキスト", "", "   ",
    "symbols: <sot> \x00 \u200b end",
])
def test_round_trip_any_text(tok: BPETokenizer, text: str) -> None:
    assert tok.decode(tok.encode(text, normalize_text=False)) == text
    assert tok.decode(tok.encode(text)) == normalize(text)


def test_learns_merges(tok: BPETokenizer) -> None:
    assert len(tok.merges) > 20
    assert tok.vocab_size == 256 + len(tok.merges) + 3
    ids = tok.encode("a large red circle")
    assert len(ids) == 4  # every training word became one token
    assert tok.decode(ids[1:2]) == " large"
    assert len(tok.encode("a large red circle")) < len(b"a large red circle")


def test_normalises_like_clip(tok: BPETokenizer) -> None:
    assert tok.encode("  A   Red\tCIRCLE ") == tok.encode("a red circle")


def test_round_trip_through_its_json(tok: BPETokenizer) -> None:
    """The tokenizer is stored inside clip.json (artifacts.clip), as this dict."""
    again = BPETokenizer.from_dict(json.loads(json.dumps(tok.to_dict())))
    assert again.merges == tok.merges and again.words == tok.words
    assert again.encode("a blue triangle") == tok.encode("a blue triangle")


def test_batch_ids_and_mask(tok: BPETokenizer) -> None:
    ids, mask = tok.batch(["a red circle", "a large blue square in the center"], 12)
    assert ids.shape == mask.shape == (2, 12) and ids.dtype == torch.int64
    assert ids[0, 0] == tok.sot and ids[0, 4] == tok.eot and (ids[0, 5:] == tok.pad).all()
    assert mask.sum(1).tolist() == [5, 9]


def test_too_long_and_empty_prompts(tok: BPETokenizer) -> None:
    with pytest.raises(ConfigError, match=r"prompt is \d+ tokens, the model reads at most 8"):
        tok.batch(["a large red circle in the top left corner of the picture"], 8)
    with pytest.raises(ConfigError, match="empty"):
        tok.batch([" \t "], 8)


def test_unknown_words(tok: BPETokenizer) -> None:
    assert tok.unknown_words("A red circle in the TOP left") == []
    assert tok.unknown_words("a photo of a red zebra, a zebra") == ["photo", "of", "zebra", ","]
    assert tok.unknown_words("a red circle 🙂 $") == ["🙂", "$"]  # symbols count as words


def test_prompts_that_are_not_utf8_are_refused_in_one_line(tok: BPETokenizer) -> None:
    bad = b"a red \xff circle".decode("utf-8", "surrogateescape")  # as argv delivers it
    for call in (lambda: check_prompt(tok, bad), lambda: tok.batch([bad], 16)):
        with pytest.raises(ConfigError, match="not valid UTF-8"):
            call()
    assert len(tok.encode("zebra")) > 0  # yet it encodes: byte-level BPE has no unknown tokens
