"""Learned tokens (textual inversion) in the tokenizer and the text conditioner, and their files
(`artifacts.tokens`): a token is one new id and one new embedding row, nothing else changes, and
a token file that is damaged, of the wrong shape or dtype, or of another CLIP is refused in one
line."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from inkfuse.artifacts.checkpoint import save_tensors
from inkfuse.artifacts.tokens import load_tokens, save_token, token_file
from inkfuse.config import ClipModelConfig
from inkfuse.errors import CheckpointError, ConfigError
from inkfuse.nn.clip import CLIP
from inkfuse.text.conditioner import TextConditioner
from inkfuse.text.tokenizer import BPETokenizer, check_prompt

CAPTIONS = ["a large red circle in the top left", "a small blue square in the center",
            "a red circle above a blue square"]


def tokenizer() -> BPETokenizer:
    return BPETokenizer.train(CAPTIONS * 10, vocab_size=400)


def conditioner(seed: int = 0) -> TextConditioner:
    """A small random CLIP (the same weights for the same seed) with the captions' tokenizer."""
    tok = tokenizer()
    torch.manual_seed(seed)
    model = CLIP(ClipModelConfig(image_size=16, channels=[8, 16], vocab_size=tok.vocab_size,
                                 context_length=24, width=32, layers=2, heads=2, embed_dim=16))
    return TextConditioner(model.eval().requires_grad_(False), tok, "both")


def test_a_token_is_one_id_in_the_slot_of_a_word() -> None:
    tok = tokenizer()
    before = tok.encode("a large red circle")
    tok.add_token("<x>", 1000)
    assert tok.encode("a large red circle") == before  # other prompts read as before
    ids = tok.encode("A  large <x> circle")  # normalised first, then matched
    assert ids.count(1000) == 1
    # where " red" was: the token takes the space before it, the rest is unchanged
    red = tok.encode(" red", normalize_text=False)
    i = before.index(red[0])
    assert ids == [*before[:i], 1000, *before[i + len(red):]]
    assert tok.decode(ids) == "a large <x> circle"
    assert tok.unknown_words("a <x> circle") == [] and tok.unknown_words("a <y>") == ["<", "y",
                                                                                      ">"]
    check_prompt(tok, "a <x> circle above a red square")
    with pytest.raises(ConfigError, match=r"learned tokens \(<x>\)"):
        check_prompt(tok, "a zebra")


def test_longer_tokens_match_first() -> None:
    tok = tokenizer()
    tok.add_token("<x>", 1000)
    tok.add_token("<x>y", 1001)
    assert tok.encode("<x>y <x>") == [1001, 1000]


@pytest.mark.parametrize(("token", "message"), [
    ("red", "a word the text encoder knows already"),
    ("ed", "occurs inside the known word 'red'"),
    ("a b", "has spaces"),
    ("", "is empty"),
    ("<X>", "use '<x>'"),
    ("<sot>", "special tokens"),
])
def test_tokens_that_cannot_be_are_refused(token: str, message: str) -> None:
    tok = tokenizer()
    with pytest.raises(ConfigError, match=message):
        tok.add_token(token, 1000)
    assert tok.added == {}


def test_a_token_twice_or_on_a_taken_id_is_refused() -> None:
    tok = tokenizer()
    tok.add_token("<x>", 1000)
    with pytest.raises(ConfigError, match="learned token already"):
        tok.add_token("<x>", 1001)
    with pytest.raises(ValueError, match="taken"):
        tok.add_token("<y>", 1000)
    with pytest.raises(ValueError, match="taken"):
        tok.add_token("<y>", 5)  # a byte's id


def test_only_the_new_row_reads_the_token_and_takes_gradients() -> None:
    text = conditioner()
    before = {k: v.clone() for k, v in text.model.state_dict().items()}
    plain = text.encode(["a red circle", "a circle"])
    row = torch.nn.Parameter(text.embedding_of("red"))
    text.add_token("<x>", row)
    again = text.encode(["a red circle", "a circle"])
    assert torch.equal(again.vector, plain.vector) and torch.equal(again.tokens, plain.tokens)
    # the row starts as "red" itself: "a <x> circle" reads exactly as "a red circle"
    assert torch.allclose(text.encode(["a <x> circle"]).tokens, plain.tokens[:1], atol=1e-5)
    with torch.no_grad():  # not a constant: every LayerNorm would take it out again
        row.add_(torch.linspace(-1, 1, len(row)))
    moved = text.encode(["a <x> circle"])
    assert not torch.allclose(moved.tokens, plain.tokens[:1], atol=1e-3)
    assert not moved.tokens.requires_grad  # no graph unless asked
    ids, mask = text.tokenize(["a <x> circle"])
    cond = text.encode_ids(ids, mask, grad=True)
    (cond.vector.sum() + cond.tokens.sum()).backward()
    assert row.grad is not None and row.grad.abs().sum() > 0
    assert all(p.grad is None for p in text.model.parameters() if p is not row)
    table = text.model.text.token
    assert torch.equal(table.base.weight, before["text.token.weight"])
    assert all(torch.equal(v, before[k]) for k, v in text.model.state_dict().items()
               if k in before)


def test_the_identity_is_of_the_weights_not_of_the_tokens() -> None:
    a, b = conditioner(0), conditioner(0)
    identity = a.identity
    a.add_token("<x>", a.embedding_of("red"))
    assert a.identity == identity == b.identity != conditioner(1).identity


def test_a_token_file_round_trips(tmp_path: Path) -> None:
    text = conditioner()
    row = text.embedding_of("blue") + torch.linspace(-1, 1, 32)
    path = save_token(tmp_path, "<x>", row, text.identity, init="blue")
    assert path == token_file(tmp_path, "<x>") == tmp_path / "tokens" / "x.safetensors"
    fresh = conditioner()
    assert load_tokens(tmp_path / "tokens", fresh) == ["<x>"]
    assert torch.equal(fresh.model.text.token.rows[0], row)
    assert fresh.learned == ["<x>"]
    pooled = fresh.encode(["a <x> circle", "a blue circle", "a circle"]).vector
    assert not torch.allclose(pooled[0], pooled[1]) and not torch.allclose(pooled[0], pooled[2])
    assert load_tokens(tmp_path / "nothing", conditioner()) == []


def write(tmp_path: Path, tensors: dict[str, torch.Tensor], **meta: str) -> Path:
    path = tmp_path / "tokens" / "x.safetensors"
    save_tensors(path, tensors, **{"kind": "token", "token": "<x>"} | meta)
    return path


@pytest.mark.parametrize(("damage", "message"), [
    ("truncate", "truncated or corrupt"),
    ("shape", r"embedding is \[33\] but this run's text encoder has \[32\]"),
    ("dtype", "embedding is float16 but this run's text encoder has float32"),
    ("nan", "is not finite"),
    ("other clip", "learned for another text encoder"),
    ("not a token", "is not a learned token"),
    ("known word", "a word the text encoder knows already"),
])
def test_a_bad_token_file_is_refused_in_one_line(tmp_path: Path, damage: str,
                                                 message: str) -> None:
    text = conditioner()
    row, identity = text.embedding_of("red"), text.identity
    if damage == "truncate":
        path = save_token(tmp_path, "<x>", row, identity)
        path.write_bytes(path.read_bytes()[:-20])
    elif damage == "shape":
        write(tmp_path, {"embedding": torch.zeros(33)}, clip=identity)
    elif damage == "dtype":
        write(tmp_path, {"embedding": row.half()}, clip=identity)
    elif damage == "nan":
        write(tmp_path, {"embedding": row * float("nan")}, clip=identity)
    elif damage == "other clip":
        save_token(tmp_path, "<x>", row, conditioner(1).identity)
    elif damage == "not a token":
        write(tmp_path, {"embedding": row}, clip=identity, kind="vae")
    else:
        write(tmp_path, {"embedding": row}, clip=identity, token="red")
    with pytest.raises(CheckpointError, match=message) as e:
        load_tokens(tmp_path / "tokens", text)
    assert "\n" not in str(e.value) and "inkfuse invert" in str(e.value)
    assert text.learned == []
