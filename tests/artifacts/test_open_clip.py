"""Pretrained open_clip models behind inkfuse's CLIP API (needs the `openclip` extra).

A tiny random open_clip model, registered as an architecture and saved to a file, stands in for
real weights: the tests read nothing from the network and build in well under a second.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from inkfuse.artifacts.clip import load_clip
from inkfuse.artifacts.open_clip import import_open_clip
from inkfuse.errors import CheckpointError, ConfigError
from inkfuse.metrics.clip import embed_images, embed_texts

try:  # not pytest.importorskip: import_open_clip also copes with a CUDA-built torchvision
    open_clip = import_open_clip()
except ConfigError:
    pytest.skip("open_clip is not installed (pip install 'inkfuse[openclip]')",
                allow_module_level=True)

TINY = "inkfuse-test-tiny"
CONFIG = {"embed_dim": 16,
          "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "head_width": 16,
                         "patch_size": 8},
          "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2,
                       "layers": 2}}
PROMPTS = ["a red circle", "a small photo of a dog on the grass, at night"]


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> tuple[torch.nn.Module, Path]:
    """(a random open_clip model of the tiny architecture, its weights file)."""
    folder = tmp_path_factory.mktemp("open_clip")
    (folder / f"{TINY}.json").write_text(json.dumps(CONFIG))
    open_clip.add_model_config(folder / f"{TINY}.json")
    torch.manual_seed(0)
    model = open_clip.create_model(TINY).eval()
    torch.save(model.state_dict(), folder / "tiny.pt")
    return model, folder / "tiny.pt"


@pytest.fixture(scope="module")
def loaded(reference: tuple[torch.nn.Module, Path]) -> tuple:
    return load_clip(f"open_clip:{TINY}:{reference[1]}")


def test_config_and_meta(loaded: tuple, reference: tuple) -> None:
    model, tok, meta = loaded
    cfg = model.cfg
    assert (cfg.image_size, cfg.in_channels, cfg.context_length, cfg.width, cfg.embed_dim) == (
        32, 3, 16, 32, 16)
    assert not model.training
    assert meta["weights"] == str(reference[1]) and meta["model_name"] == TINY
    assert tok.vocab_size == cfg.vocab_size == 49408
    assert tok.unknown_words("a zyzzyva on a xylophone") == [] and not tok.words


@torch.no_grad()
def test_encode_image_resizes_and_normalises(loaded: tuple, reference: tuple) -> None:
    model = loaded[0]
    images = torch.rand(3, 3, 32, 32) * 2 - 1
    mean = torch.tensor(open_clip.OPENAI_DATASET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(open_clip.OPENAI_DATASET_STD).view(1, 3, 1, 1)
    theirs = reference[0].encode_image(((images + 1) / 2 - mean) / std, normalize=True)
    ours = model.encode_image(images)
    assert ours.shape == (3, 16) and ours.dtype == torch.float32
    torch.testing.assert_close(ours, theirs)
    for other in (torch.rand(2, 3, 20, 28) * 2 - 1, torch.rand(2, 1, 64, 64) * 2 - 1):
        emb = model.encode_image(other)  # any size; greyscale read as grey RGB
        torch.testing.assert_close(emb.norm(dim=-1), torch.ones(2))


@torch.no_grad()
def test_encode_text_matches_open_clip(loaded: tuple, reference: tuple) -> None:
    model, tok, _ = loaded
    ids, mask = tok.batch(PROMPTS, model.cfg.context_length)
    theirs_ids = open_clip.get_tokenizer(TINY)(PROMPTS)
    assert torch.equal(ids, theirs_ids)
    assert torch.equal(mask.sum(1), (theirs_ids != 0).sum(1))
    theirs = reference[0].encode_text(theirs_ids, normalize=True)
    ours = model.encode_text(ids, mask)
    assert ours.shape == (2, 16) and ours.dtype == torch.float32
    torch.testing.assert_close(ours, theirs)
    tokens, out_mask = model.encode_text_tokens(ids, mask)
    assert tokens.shape == (2, 16, 32) and out_mask is mask
    # the per-token features are the final LayerNorm's output: zero mean over the width
    torch.testing.assert_close(tokens.mean(-1), torch.zeros(2, 16), atol=1e-5, rtol=0)


@torch.no_grad()
def test_padding_changes_nothing(loaded: tuple) -> None:
    model, tok, _ = loaded
    ids, mask = tok.batch(PROMPTS, 16)
    short_ids, short_mask = tok.batch(PROMPTS[:1], 5)  # <sot> a red circle <eot>
    torch.testing.assert_close(model.encode_text(short_ids, short_mask),
                               model.encode_text(ids, mask)[:1])
    long_tokens, _ = model.encode_text_tokens(ids, mask)
    short_tokens, _ = model.encode_text_tokens(short_ids, short_mask)
    torch.testing.assert_close(short_tokens[0], long_tokens[0, :5])


def test_callers_of_load_clip_work(loaded: tuple) -> None:
    model, tok, _ = loaded
    txt = embed_texts(model, tok, PROMPTS)
    img = embed_images(model, torch.randint(0, 256, (2, 3, 24, 24), dtype=torch.uint8))
    assert (img @ txt.T).shape == (2, 2)
    assert F.cosine_similarity(txt, txt).allclose(torch.ones(2))


@torch.no_grad()
def test_torchscript_archive(reference: tuple, tmp_path: Path) -> None:
    """OpenAI's releases (and the `clip` package's cache) are TorchScript, not a state dict."""
    torch.jit.save(torch.jit.script(reference[0]), tmp_path / "scripted.pt")
    # TorchScript is pickle inside: of no known sha256, it loads only when trusted
    with pytest.raises(CheckpointError, match=r"scripted\.pt is not a known network \(sha256 "
                                              r".*pass --trust-weights if you trust this file"):
        load_clip(f"open_clip:{TINY}:{tmp_path / 'scripted.pt'}")
    model, tok, _ = load_clip(f"open_clip:{TINY}:{tmp_path / 'scripted.pt'}", trust=True)
    ids, mask = tok.batch(PROMPTS, 16)
    torch.testing.assert_close(model.encode_text(ids, mask),
                               reference[0].encode_text(ids, normalize=True))


def test_tokenizer_contract(loaded: tuple) -> None:
    tok = loaded[1]
    with pytest.raises(ConfigError, match="prompt is empty"):
        tok.batch(["a cat", "  "], 16)
    ids, mask = tok.batch([""], 16, allow_empty=True)  # classifier-free guidance's null
    assert mask.sum() == 2 and ids[0, 0] == tok.sot and ids[0, 1] == tok.eot
    with pytest.raises(ConfigError, match="the model reads at most 16: shorten it"):
        tok.batch([" ".join(["cat"] * 20)], 16)


def test_errors_are_one_line(reference: tuple, tmp_path: Path) -> None:
    state = reference[0].state_dict()
    wrong = tmp_path / "wrong.pt"
    torch.save({**state, "positional_embedding": torch.zeros(8, 32)}, wrong)
    with pytest.raises(CheckpointError, match=r"positional_embedding is \[8, 32\] but"):
        load_clip(f"open_clip:{TINY}:{wrong}")
    torch.save({k: v for k, v in state.items() if k != "ln_final.weight"}, wrong)
    with pytest.raises(CheckpointError, match=r"lacks tensor ln_final\.weight"):
        load_clip(f"open_clip:{TINY}:{wrong}")
    torch.save({**state, "extra": Path("x")}, wrong)  # a pickled object beyond tensors
    with pytest.raises(CheckpointError, match=r"holds pickled objects besides tensors.*"
                                              r"--trust-weights"):
        load_clip(f"open_clip:{TINY}:{wrong}")
    wrong.write_bytes(b"not weights")
    with pytest.raises(CheckpointError, match="cannot be read as weights"):
        load_clip(f"open_clip:{TINY}:{wrong}")
    with pytest.raises(CheckpointError, match=r"nowhere\.pt is missing"):
        load_clip(f"open_clip:{TINY}:{tmp_path / 'nowhere.pt'}")
    with pytest.raises(ConfigError, match="did you mean ViT-B-32"):
        load_clip("open_clip:ViT-B-23:openai")
    with pytest.raises(ConfigError, match=r"no pretrained tag 'nonsense'.*openai"):
        load_clip("open_clip:ViT-B-32:nonsense")
    with pytest.raises(ConfigError, match="other than CLIP's own"):
        load_clip("open_clip:ViT-B-16-SigLIP:webli")
    with pytest.raises(ConfigError, match="is not open_clip:MODEL:WEIGHTS"):
        load_clip("open_clip:ViT-B-32")


def test_uncached_tag_says_how_to_fetch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HOME", str(tmp_path))
    with pytest.raises(CheckpointError, match=r"not on this machine .*create_model\('ViT-B-32', "
                                              r"pretrained='openai'\)"):
        load_clip("open_clip:ViT-B-32:openai")


def test_tag_from_the_hugging_face_cache(reference: tuple, tmp_path: Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """A tag resolves to the cached file, takes its mean/std, and its QuickGELU."""
    from safetensors.torch import save_file

    repo = tmp_path / "hub" / "models--inkfuse--tiny"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("abc123")
    (repo / "snapshots" / "abc123").mkdir(parents=True)
    save_file(reference[0].state_dict(), repo / "snapshots" / "abc123" /
              "open_clip_model.safetensors")
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setitem(open_clip.pretrained._PRETRAINED, TINY, {"mine": {
        "hf_hub": "inkfuse/tiny/", "quick_gelu": True, "mean": (0.5,) * 3, "std": (0.5,) * 3}})
    model, _, meta = load_clip(f"open_clip:{TINY}:mine")
    assert meta["weights"].endswith("open_clip_model.safetensors")
    assert meta["quick_gelu"] and meta["mean"] == [0.5] * 3
    assert any(isinstance(m, open_clip.model.QuickGELU) for m in model.modules())


def test_cli(reference: tuple, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from PIL import Image

    from inkfuse.cli import main

    spec = f"open_clip:{TINY}:{reference[1]}"
    image = tmp_path / "a.png"
    Image.new("RGB", (40, 30), (200, 30, 30)).save(image)
    assert main(["clip", "similarity", spec, "--image", str(image), "--text", "a red circle",
                 "--text", "a blue square", "--out", str(tmp_path / "heat.png")]) == 0
    assert len(json.loads(capsys.readouterr().out.splitlines()[0])["similarity"][0]) == 2
    assert main(["clip", "score", spec]) == 1
    assert "inkfuse clip similarity" in capsys.readouterr().err
