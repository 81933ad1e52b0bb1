"""The CLIP towers and the InfoNCE loss."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from inkfuse.config import ClipModelConfig
from inkfuse.nn.clip import CLIP, clip_loss
from inkfuse.text.tokenizer import BPETokenizer

CORPUS = ["a red circle", "a blue square in the center", "a blue square in the top left"] * 2


def small() -> CLIP:
    torch.manual_seed(0)
    return CLIP(ClipModelConfig(image_size=16, channels=[8, 16], vocab_size=300,
                                context_length=24, width=32, layers=2, heads=2, embed_dim=16))


def test_shapes_and_unit_norm() -> None:
    model = small().eval()
    tok = BPETokenizer.train(CORPUS, 300)
    ids, mask = tok.batch(["a red circle", "a blue square in the center"], 24)
    img = model.encode_image(torch.rand(2, 3, 16, 16) * 2 - 1)
    txt = model.encode_text(ids, mask)
    assert img.shape == txt.shape == (2, 16)
    assert torch.allclose(img.norm(dim=1), torch.ones(2)) and torch.allclose(txt.norm(dim=1),
                                                                           torch.ones(2))
    feats, m = model.encode_text_tokens(ids, mask)
    assert feats.shape == (2, 24, 32) and m is mask
    assert math.isclose(model.scale().item(), 1 / 0.07, rel_tol=1e-5)
    with torch.no_grad():
        model.logit_scale.fill_(10.0)
    assert math.isclose(model.scale().item(), 100.0, rel_tol=1e-5)


def test_padding_does_not_change_text_features() -> None:
    model = small().eval()
    tok = BPETokenizer.train(CORPUS, 300)
    texts = ["a red circle", "a blue square in the top left"]
    short, long = tok.batch(texts, 17), tok.batch(texts, 24)
    with torch.no_grad():
        a, b = model.encode_text(*short), model.encode_text(*long)
        fa, _ = model.encode_text_tokens(*short)
        fb, _ = model.encode_text_tokens(*long)
    assert torch.allclose(a, b, atol=1e-5)
    assert torch.allclose(fa[short[1]], fb[long[1]], atol=1e-5)


def test_clip_loss_closed_form() -> None:
    img = F.normalize(torch.randn(4, 8), dim=1)
    assert math.isclose(clip_loss(img, img, 0.0).item(), math.log(4), rel_tol=1e-6)
    logits = 5.0 * img @ img.T
    expected = -torch.log_softmax(logits, 1).diag().mean()  # symmetric: rows = columns
    assert torch.allclose(clip_loss(img, img, 5.0), expected)
    assert clip_loss(img, img, 100.0) < clip_loss(img, img.roll(1, 0), 100.0)


def test_hard_negatives_are_extra_columns_of_image_to_text_only() -> None:
    img, txt = (F.normalize(torch.randn(4, 8, generator=torch.Generator().manual_seed(s)), dim=1)
                for s in (1, 2))
    neg = F.normalize(torch.randn(6, 8, generator=torch.Generator().manual_seed(3)), dim=1)
    i2t = 5.0 * torch.cat([img @ txt.T, img @ neg.T], 1)  # [4, 10]
    t2i = 5.0 * txt @ img.T  # [4, 4]: no image for the negatives
    expected = -(torch.log_softmax(i2t, 1).diag().mean()
                 + torch.log_softmax(t2i, 1).diag().mean()) / 2
    assert torch.allclose(clip_loss(img, txt, 5.0, neg), expected)
    assert clip_loss(img, txt, 5.0, neg) > clip_loss(img, txt, 5.0)  # more to tell apart
