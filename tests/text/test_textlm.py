"""The masked-LM text encoder: BERT's masking rule, a tiny run that learns, saves, loads as a
frozen conditioner and resumes exactly, and one-line refusals of damaged run dirs."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from inkfuse.artifacts.clip import copy_clip, load_conditioner
from inkfuse.artifacts.textlm import load_textlm
from inkfuse.config import TextLMConfig, load_recipe
from inkfuse.errors import CheckpointError, ConfigError
from inkfuse.nn.textlm import mask_tokens
from inkfuse.train import train

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = ["data.count=2048", "textlm.width=32", "textlm.layers=2", "textlm.heads=2",
        "textlm.context_length=16", "textlm.eval_count=256", "train.steps=150",
        "train.batch_size=32", "train.warmup_steps=10", "train.lr=3e-3", "train.seed=0"]
SOT, EOT, PAD, MASK = 17, 18, 19, 20  # a tokenizer of 20 ids: 17 text, then the 3 specials


def batch(*texts: list[int], length: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    """`<sot> text <eot> <pad>...` rows, as `BPETokenizer.batch` lays them out."""
    ids = torch.full((len(texts), length), PAD)
    mask = torch.zeros(len(texts), length, dtype=torch.bool)
    for row, text in enumerate(texts):
        ids[row, :len(text) + 2] = torch.tensor([SOT, *text, EOT])
        mask[row, :len(text) + 2] = True
    return ids, mask


# ----------------------------------------------------------------------------- masking


def test_at_least_one_text_token_per_caption_is_chosen_by_the_lowest_draw() -> None:
    ids, mask = batch([1, 2, 3, 4], [5], [])  # the last row is the empty prompt
    inputs, chosen = mask_tokens(ids, mask, 1e-9, MASK, torch.Generator().manual_seed(0))
    u = torch.rand(ids.shape, generator=torch.Generator().manual_seed(0))  # the first draw
    expected = torch.zeros_like(chosen)
    expected[0, 1 + u[0, 1:5].argmin()] = True  # positions 1-4 hold the text
    expected[1, 1] = True  # the only text token
    assert torch.equal(chosen, expected)  # never <sot>, <eot>, a pad, or the empty row
    assert torch.equal(inputs[~chosen], ids[~chosen])
    with pytest.raises(ValueError, match="nothing to predict"):
        mask_tokens(*batch([], []), 0.15, MASK)


def test_bert_masking_shares() -> None:
    """15 % of the text chosen (plus the forced one per row); of those 80 % <mask>, 10 % another
    token of the batch, 10 % kept."""
    text = list(range(17)) * 2  # 34 text tokens a row
    ids, mask = batch(*[text] * 2000, length=40)
    gen = torch.Generator().manual_seed(1)
    inputs, chosen = mask_tokens(ids, mask, 0.15, MASK, gen)
    special = (ids == SOT) | (ids == EOT) | (ids == PAD)
    assert not (chosen & special).any() and chosen.sum(dim=1).min() >= 1
    assert chosen.float().sum() / (~special).sum() == pytest.approx(0.15, abs=0.01)
    picked, original = inputs[chosen], ids[chosen]
    masked, kept = (picked == MASK).float().mean(), (picked == original).float().mean()
    assert masked == pytest.approx(0.8, abs=0.02)
    assert kept == pytest.approx(0.1 + 0.1 / 17, abs=0.02)  # a random token may be the same
    assert picked[picked != MASK].max() < SOT  # random tokens are text tokens
    again = mask_tokens(ids, mask, 0.15, MASK, torch.Generator().manual_seed(1))
    assert torch.equal(again[0], inputs)  # the generator fixes every draw


# ----------------------------------------------------------------------------- a tiny run


@pytest.fixture(scope="module")
def run(one_thread: None, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """~6 s on one CPU core: 150 steps of batch 32, width 32."""
    out = tmp_path_factory.mktemp("textlm")
    train(load_recipe("textlm-shapes", TINY), out, progress=False)
    return out, json.loads((out / "textlm.json").read_text())["metrics"]


def test_a_masked_lm_learns_the_captions(run: tuple[Path, dict]) -> None:
    _, metrics = run
    assert metrics["steps"] == 150 and metrics["loss_last"] < 0.5 * metrics["loss_first"]
    # measured 0.41 against 0.14: "a ... in the ..." and which words follow which are learnt
    assert metrics["masked_accuracy"] > metrics["unigram_accuracy"] + 0.15


def test_it_loads_as_a_frozen_conditioner(run: tuple[Path, dict], tmp_path: Path) -> None:
    out, _ = run
    text = load_conditioner(out, "both")
    assert not any(p.requires_grad for p in text.model.parameters())
    assert text.pooled_dim == text.token_dim == 32
    cond = text.encode(["a red circle", "a small blue square in the center"])
    assert cond.vector.shape == (2, 32) and cond.tokens.shape == (2, 16, 32)
    assert cond.mask.sum(dim=1).tolist() == [5, 9]  # <sot> a red circle <eot>, ...
    assert torch.allclose(cond.vector.norm(dim=1), torch.ones(2))
    mean = (cond.tokens * cond.mask[..., None]).sum(1) / cond.mask.sum(1, keepdim=True)
    assert torch.allclose(cond.vector, F.normalize(mean, dim=-1), atol=1e-6)  # Imagen's pooling
    assert text.empty_prompt().vector.shape == (1, 32)
    with pytest.raises(ConfigError, match="zebra"):
        text.encode(["a red zebra"])

    copy_clip(out, tmp_path / "copy")  # what a diffusion run keeps in RUN/clip
    assert sorted(p.name for p in (tmp_path / "copy").iterdir()) == ["textlm.json",
                                                                     "textlm.safetensors"]
    copied = load_conditioner(tmp_path / "copy", "pooled").encode(["a red circle"])
    assert torch.equal(copied.vector, cond.vector[:1])


def test_a_killed_run_resumes_to_identical_weights(tmp_path: Path,
                                                   killed_after_checkpoint) -> None:
    config = load_recipe("textlm-shapes", [*TINY, "data.count=256", "textlm.eval_count=16",
                                           "train.steps=6", "train.checkpoint_every=3"])
    straight = train(config, tmp_path / "straight", progress=False)
    killed_after_checkpoint(config, tmp_path / "resumed")
    assert json.loads((tmp_path / "resumed/checkpoint/state.json").read_text())["step"] == 3
    resumed = train(config, tmp_path / "resumed", progress=False)
    for name in ("checkpoint/model.safetensors", "checkpoint/trainer.safetensors",
                 "textlm.safetensors"):
        a, b = load_file(str(straight / name)), load_file(str(resumed / name))
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name
    metrics = [json.loads((r / "textlm.json").read_text())["metrics"] for r in (straight, resumed)]
    assert metrics[0] == metrics[1]


# ----------------------------------------------------------------------------- refusals


@pytest.mark.parametrize(("edit", "message"), [
    (lambda m: m.update(format="inkfuse-clip-1"), "is not an inkfuse text LM"),
    (lambda m: m["model"].update(depth=3), "broken model section"),
    (lambda m: m["model"].update(vocab_size=300), r"tokenizer has \d+ tokens but the model 300"),
    (lambda m: m["model"].update(width=64, heads=2), "different model"),
    (lambda m: m.update(tokenizer=[]), "tokenizer is a list"),
])
def test_a_damaged_textlm_json_is_refused(run: tuple[Path, dict], tmp_path: Path, edit,
                                          message: str) -> None:
    out, _ = run
    shutil.copy(out / "textlm.safetensors", tmp_path)
    meta = json.loads((out / "textlm.json").read_text())
    edit(meta)
    (tmp_path / "textlm.json").write_text(json.dumps(meta))
    for load in (load_textlm, lambda d: load_conditioner(d, "both")):
        with pytest.raises(CheckpointError, match=message) as e:
            load(tmp_path)
        assert "\n" not in str(e.value)


def test_missing_or_corrupt_files_are_refused(run: tuple[Path, dict], tmp_path: Path) -> None:
    out, _ = run
    (tmp_path / "textlm.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="damaged"):
        load_conditioner(tmp_path, "pooled")
    shutil.copy(out / "textlm.json", tmp_path)
    with pytest.raises(CheckpointError, match=r"textlm\.safetensors is missing"):
        copy_clip(tmp_path, tmp_path / "copy")
    assert not (tmp_path / "copy").exists()  # nothing copied from a broken dir


def test_recipe_checks() -> None:
    assert isinstance(load_recipe("textlm-shapes"), TextLMConfig)
    assert load_recipe("textlm-shapes") == TextLMConfig()  # the recipe spells out the defaults
    for value in (0, 1):
        with pytest.raises(ConfigError, match=r"textlm\.mask_prob = .* strictly between 0 and 1"):
            load_recipe("textlm-shapes", [f"textlm.mask_prob={value}"])
    with pytest.raises(ConfigError, match=r"textlm\.width = 30 is not divisible"):
        load_recipe("textlm-shapes", ["textlm.width=30"])
    with pytest.raises(ConfigError, match="a text-LM trains on captions"):
        load_recipe("textlm-shapes", ["data.name='mnist'"])
    with pytest.raises(ConfigError, match=r"recipes/textlm-shapes\.toml is a text-LM recipe"):
        load_recipe("textlm-shapes", kind="clip")


def test_cli_trains_and_reports(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from inkfuse.cli import main

    sets = [arg for kv in [*TINY, "data.count=256", "textlm.eval_count=16", "train.steps=4"]
            for arg in ("--set", kv)]
    assert main(["textlm", "train", "--out", str(tmp_path / "lm"), "--quiet", *sets]) == 0
    out = capsys.readouterr().out
    assert "held-out masked accuracy" in out and (tmp_path / "lm" / "textlm.json").is_file()
    # a recipe of another kind: one line naming the right command, exit 1, no run dir
    assert main(["textlm", "train", "clip-shapes", "--out", str(tmp_path / "x"), "--quiet"]) == 1
    err = capsys.readouterr().err
    assert "is a CLIP recipe" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "x").exists()
