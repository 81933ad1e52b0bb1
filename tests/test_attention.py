"""Where the words go: the cross-attention weights as `forward` uses them, and the maps of a
sampled prompt (shares that sum to 1 at every pixel; recording changes nothing)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from inkfuse.artifacts.run import load_run
from inkfuse.attention import cross_attention_maps
from inkfuse.errors import ConfigError
from inkfuse.nn.blocks import CrossAttention
from inkfuse.pipelines import sample

RUNS = Path(__file__).resolve().parent / "fixtures" / "old-runs"


def test_attention_weights_are_what_forward_attends_with():
    torch.manual_seed(0)
    layer = CrossAttention(16, 8, 8, norm="group", groups=4)
    x, tokens = torch.randn(2, 16, 4, 4), torch.randn(2, 5, 8)
    mask = torch.tensor([[True] * 5, [True, True, True, False, False]])
    weights = layer.attention_weights(x, tokens, mask)  # [2, heads, 16, 5]
    assert torch.allclose(weights.sum(-1), torch.ones(2, 2, 16))
    assert (weights[1, :, :, 3:] == 0).all()  # padding gets nothing
    q, k, v = layer._qkv(x, tokens)
    expected = F.scaled_dot_product_attention(q, k, v, attn_mask=mask[:, None, None, :])
    assert torch.allclose(weights @ v, expected, atol=1e-5)


def test_maps_of_a_prompt_share_every_pixel_and_leave_the_sample_alone():
    run = load_run(RUNS / "text")
    maps = cross_attention_maps(run, "a red circle", steps=4, seed=3)
    assert maps.tokens[0] == "<sot>" and maps.tokens[-1] == "<eot>"
    assert "circle" in maps.tokens
    assert maps.maps.shape == (len(maps.tokens), 16, 16)
    assert torch.allclose(maps.maps.sum(0), torch.ones(16, 16), atol=1e-4)
    expected = sample(run, 1, prompts=["a red circle"], sampler=run.config.sample.sampler,
                      steps=4, guidance=run.config.sample.guidance, seed=3, progress=False)
    assert torch.equal(maps.image, expected[0])
    late = cross_attention_maps(run, "a red circle", steps=4, seed=3, at=[1.0])
    assert not torch.allclose(late.maps, maps.maps)  # one step is not the average of four


def test_runs_without_cross_attention_and_missing_prompts_get_one_line(tmp_path):
    with pytest.raises(ConfigError, match="no cross-attention"):
        cross_attention_maps(load_run(RUNS / "class"), "a red circle")
    proc = subprocess.run([sys.executable, "-m", "inkfuse.cli", "viz", "attention",
                           str(RUNS / "text"), "--out", str(tmp_path / "a.png")],
                          capture_output=True, text=True)
    assert proc.returncode == 1 and "needs --prompt" in proc.stderr
    assert proc.stderr.count("\n") == 1
