"""A byte-level BPE tokenizer (GPT-2 / CLIP style), trained on the captions it will read.

Text is first split into chunks (a word with its leading space, a number, a run of punctuation,
or whitespace), each chunk is turned into its UTF-8 bytes (ids 0-255), and learned merges join
the most frequent adjacent pairs into new ids (256, 257, ...), in the order they were learned.
Three special ids follow the merges: `<sot>` and `<eot>` around every prompt, `<pad>` after it.

Because every byte is in the vocabulary, there are no unknown *tokens*: any string encodes, and
`decode(encode(s, normalize=False)) == s` for every str. A word the text encoder never saw in
training still gets an embedding, just a meaningless one; `unknown_words` finds such words so
the CLI can refuse them with a clear message instead of drawing nonsense.

Learned tokens (textual inversion, Gal et al. 2022) are strings added after training
(`add_token`, which `text.conditioner.TextConditioner.add_token` calls with the id of the new
embedding row): they are matched literally, longest first, before the text is split into
chunks, each with the space before it, so "a <tok> circle" is `a`, `<tok>`, ` circle` with the
token in the slot a word such as ` red` has. Text between them is encoded as before.
"""

from __future__ import annotations

import itertools
import re
from collections import Counter
from collections.abc import Callable, Iterable

import torch

from inkfuse.errors import CheckpointError, ConfigError

FORMAT = "inkfuse-bpe-1"
SPECIALS = ("<sot>", "<eot>", "<pad>")
# letters, digits, punctuation (with an optional leading space), then whitespace; covers every
# character, so joining the chunks gives back the text
_CHUNK = re.compile(r" ?[^\W\d_]+| ?\d+| ?(?:[^\s\w]|_)+|\s+(?!\S)|\s+")
# the units the unknown-word check compares: words, numbers, and each symbol on its own (an emoji
# or a "$" the captions never had is as unknown to the model as a word it never read)
_WORD = re.compile(r"[^\W\d_]+|\d+|[^\w\s]|_")
_SURROGATE = re.compile("[\ud800-\udfff]")  # how Python keeps argv bytes that are not UTF-8

Pair = tuple[int, int]


def normalize(text: str) -> str:
    """Lower-case and collapse runs of whitespace, as CLIP does: "A  Red\\tCircle " -> "a red
    circle". Captions differ in case and spacing more than in meaning."""
    return " ".join(text.lower().split())


def _merge(ids: list[int], pair: Pair, new: int) -> list[int]:
    out, i = [], 0
    while i < len(ids):
        if i + 1 < len(ids) and (ids[i], ids[i + 1]) == pair:
            out.append(new)
            i += 2
        else:
            out.append(ids[i])
            i += 1
    return out


class BPETokenizer:
    """Merges learned from a corpus; `words` are the words that corpus contained."""

    def __init__(self, merges: list[Pair], words: Iterable[str] = ()):
        self.merges = [tuple(p) for p in merges]
        self.ranks: dict[Pair, int] = {p: i for i, p in enumerate(self.merges)}
        self.words = frozenset(words)
        self.bytes: list[bytes] = [bytes([b]) for b in range(256)]
        for a, b in self.merges:
            self.bytes.append(self.bytes[a] + self.bytes[b])
        self.sot, self.eot, self.pad = range(len(self.bytes), len(self.bytes) + 3)
        self._cache: dict[str, list[int]] = {}
        self.added: dict[str, int] = {}  # learned tokens: text -> id (after the model's table)
        self._added: re.Pattern[str] | None = None  # " ?(tok|...)", longest first

    @property
    def vocab_size(self) -> int:
        return len(self.bytes) + len(SPECIALS)

    @classmethod
    def train(cls, texts: Iterable[str], vocab_size: int) -> BPETokenizer:
        """Learn `vocab_size - 259` merges from `texts` (normalised), most frequent pair first.

        Counting is per distinct chunk times its frequency, so a corpus of a million captions
        with a few hundred distinct words trains in milliseconds. Stops early when no pair
        occurs twice. Ties break towards the smaller pair, so training is deterministic.
        """
        if vocab_size < 256 + len(SPECIALS):
            raise ConfigError(f"vocab_size = {vocab_size} is too small: it must be at least "
                              f"{256 + len(SPECIALS)} (256 bytes + 3 special tokens)")
        chunks: Counter[str] = Counter()
        words: set[str] = set()
        for text in texts:
            text = normalize(text)
            chunks.update(_CHUNK.findall(text))
            words.update(_WORD.findall(text))
        seqs = {c: list(c.encode()) for c in chunks}
        merges: list[Pair] = []
        for new in range(256, vocab_size - len(SPECIALS)):
            pairs: Counter[Pair] = Counter()
            for c, ids in seqs.items():
                for pair in itertools.pairwise(ids):
                    pairs[pair] += chunks[c]
            if not pairs:
                break
            best = min(pairs, key=lambda p: (-pairs[p], p))
            if pairs[best] < 2:
                break
            merges.append(best)
            seqs = {c: _merge(ids, best, new) for c, ids in seqs.items()}
        return cls(merges, words)

    def _encode_chunk(self, chunk: str) -> list[int]:
        """Apply merges in the order they were learned (lowest rank first), as GPT-2 does."""
        if chunk in self._cache:
            return self._cache[chunk]
        ids = list(chunk.encode())
        while len(ids) > 1:
            pair = min(itertools.pairwise(ids),
                       key=lambda p: self.ranks.get(p, len(self.ranks)))
            if pair not in self.ranks:
                break
            ids = _merge(ids, pair, 256 + self.ranks[pair])
        if len(self._cache) < 100_000:
            self._cache[chunk] = ids
        return ids

    def _encode_text(self, text: str) -> list[int]:
        return [i for chunk in _CHUNK.findall(text) for i in self._encode_chunk(chunk)]

    def encode(self, text: str, *, normalize_text: bool = True) -> list[int]:
        """Token ids of `text`, without `<sot>`/`<eot>`. Normalised first unless told not to.
        Learned tokens become their one id each (module docstring)."""
        if normalize_text:
            text = normalize(text)
        if self._added is None:
            return self._encode_text(text)
        ids: list[int] = []
        for i, piece in enumerate(self._added.split(text)):  # text, token, text, token, ...
            ids += [self.added[piece.lstrip(" ")]] if i % 2 else self._encode_text(piece)
        return ids

    def decode(self, ids: Iterable[int]) -> str:
        """Text of `ids`; special tokens are dropped, learned tokens are written with a space
        before them. Invalid UTF-8 (a cut multi-byte character) becomes U+FFFD rather than an
        error."""
        learned = {i: f" {text}".encode() for text, i in self.added.items()}
        ids = [int(i) for i in ids]
        return b"".join(self.bytes[i] if i < len(self.bytes) else learned.get(i, b"")
                        for i in ids).decode("utf-8", errors="replace")

    def check_new_token(self, text: str) -> None:
        """Refuse, in one line, a string that cannot become a learned token: one with
        whitespace or upper case (prompts are read lower-cased, so it would never match), a
        special token, a token learned already, a word the captions had (the model has an
        embedding for it), or a string inside such a word, which would then read differently
        ("ed" would cut "red" in two)."""
        check_text(text)
        example = "e.g. '<magenta-ish>'"
        if not text or any(c.isspace() for c in text):
            raise ConfigError(f"the token {text!r} is empty or has spaces: a learned token is "
                              f"one word without spaces, {example}")
        if text != text.lower():
            raise ConfigError(f"the token {text!r} has upper-case letters, but prompts are read "
                              f"lower-cased: use {text.lower()!r}")
        if text in SPECIALS:
            raise ConfigError(f"{text!r} is one of the tokenizer's special tokens: choose "
                              f"another name, {example}")
        if text in self.added:
            raise ConfigError(f"{text!r} is a learned token already: choose another name, "
                              f"{example}")
        clash = next((w for w in sorted(self.words) if text in w), None)
        if clash == text:
            raise ConfigError(f"{text!r} is a word the text encoder knows already; a learned "
                              f"token needs a new name, e.g. '<{text}-ish>'")
        if clash is not None:
            raise ConfigError(f"{text!r} occurs inside the known word {clash!r}, which would "
                              f"then read differently: choose another name, e.g. '<{text}>'")

    def add_token(self, text: str, token_id: int) -> None:
        """Read `text` as the single id `token_id` from now on (`check_new_token` first). The id
        is the new row of the model's token embedding, which only the model knows; it must lie
        beyond this tokenizer's own ids."""
        self.check_new_token(text)
        if token_id < self.vocab_size or token_id in self.added.values():
            raise ValueError(f"id {token_id} of {text!r} is taken: learned tokens need ids from "
                             f"{self.vocab_size} on, one each")
        self.added[text] = token_id
        alternatives = "|".join(map(re.escape, sorted(self.added, key=len, reverse=True)))
        self._added = re.compile(f"( ?(?:{alternatives}))")

    def unknown_words(self, text: str) -> list[str]:
        """Words of `text` (after normalising) that never occurred in the training captions, in
        order of first appearance; learned tokens are known. Empty when the tokenizer has no
        word list (trained on none)."""
        if not self.words:
            return []
        text = normalize(text)
        if self._added is not None:
            text = self._added.sub(" ", text)
        seen: dict[str, None] = {}
        for word in _WORD.findall(text):
            if word not in self.words:
                seen.setdefault(word)
        return list(seen)

    def batch(self, texts: list[str], context_length: int, *, allow_empty: bool = False
              ) -> tuple[torch.Tensor, torch.Tensor]:
        """`<sot> tokens <eot> <pad>...` per text: (ids int64 [B, L], mask bool [B, L]), where
        mask marks the real tokens (pads are False) and L = context_length. The empty prompt is
        refused unless `allow_empty` (it is the null condition of classifier-free guidance)."""
        return pack(texts, context_length, self.encode, normalize, sot=self.sot, eot=self.eot,
                    pad=self.pad, allow_empty=allow_empty)

    def to_dict(self) -> dict:
        return {"format": FORMAT, "merges": [list(p) for p in self.merges],
                "words": sorted(self.words)}

    @classmethod
    def from_dict(cls, data: dict, source: str = "tokenizer") -> BPETokenizer:
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise CheckpointError(f"{source} is not an inkfuse BPE tokenizer (no '{FORMAT}' tag)")
        merges = data.get("merges", [])
        for i, pair in enumerate(merges):  # a merge may only refer to bytes or earlier merges
            if len(pair) != 2 or not all(isinstance(t, int) and 0 <= t < 256 + i for t in pair):
                raise CheckpointError(f"{source}: merge {i} {pair} is invalid; the file is "
                                      "damaged, train the tokenizer again")
        return cls([tuple(p) for p in merges], data.get("words", []))


def pack(texts: list[str], context_length: int, encode: Callable[[str], list[int]],
         clean: Callable[[str], str], *, sot: int, eot: int, pad: int, allow_empty: bool
         ) -> tuple[torch.Tensor, torch.Tensor]:
    """The one way prompts become a batch, for every tokenizer: `<sot> encode(text) <eot>`
    padded to `context_length`, as (ids int64 [B, L], mask bool [B, L]). A prompt longer than
    the context is an error, not a silent cut; an empty one (after `clean`) too, unless
    `allow_empty`."""
    ids = torch.full((len(texts), context_length), pad, dtype=torch.int64)
    mask = torch.zeros((len(texts), context_length), dtype=torch.bool)
    for row, text in enumerate(texts):
        check_text(text)
        if not clean(text) and not allow_empty:
            raise ConfigError("the prompt is empty: describe the image, e.g. 'a red circle'")
        tokens = [sot, *encode(text), eot]
        if len(tokens) > context_length:
            raise ConfigError(f"prompt is {len(tokens)} tokens, the model reads at most "
                              f"{context_length}: shorten it")
        ids[row, : len(tokens)] = torch.tensor(tokens)
        mask[row, : len(tokens)] = True
    return ids, mask


def check_text(text: str) -> None:
    """Refuse text that is not valid Unicode: a prompt given as bytes that are not UTF-8 reaches
    Python as lone surrogates, which no tokenizer can encode."""
    if _SURROGATE.search(text):
        shown = text.encode("utf-8", "backslashreplace").decode("ascii", "backslashreplace")
        raise ConfigError(f"the prompt {shown!r} is not valid UTF-8 text; "
                          "type it again or save the prompts file as UTF-8")


def check_prompt(tok: BPETokenizer, text: str) -> None:
    """Refuse a prompt with words the model never read: BPE would encode them, but their
    embedding means nothing, and a silently wrong similarity is worse than an error."""
    check_text(text)
    unknown = tok.unknown_words(text)
    if unknown:
        words = sorted(tok.words)
        known = ", ".join(words[:30]) + (", ..." if len(words) > 30 else "")
        learned = sorted(getattr(tok, "added", ()))
        also = f" or its learned tokens ({', '.join(learned)})" if learned else ""
        raise ConfigError(f"the prompt {text!r} has words the model never saw in training: "
                          f"{', '.join(unknown)}; use words from its captions ({known}){also}")
