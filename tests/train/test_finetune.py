"""DreamBooth fine-tuning of a tiny text run, in full and with LoRA adapters: what changes and
what does not, the prior-preservation images and loss, exact resume, and bad input refused in
one line by the CLI with nothing written."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from PIL import Image

from inkfuse import pipelines
from inkfuse.artifacts import checkpoint
from inkfuse.artifacts.finetune import CLASS_IMAGES, weights_digest
from inkfuse.cli import main
from inkfuse.config import load_recipe
from inkfuse.data.shapes import generate_shapes
from inkfuse.errors import CheckpointError
from inkfuse.nn.lora import Adapted
from inkfuse.train import train
from inkfuse.train.finetune import CLASS_SEED, finetune_recipe
from inkfuse.train.loop import seed_for

pytestmark = pytest.mark.usefixtures("one_thread")

# a CLIP of a few seconds (its own 512 captions, tiny towers), then a tiny text U-Net on it
CLIP = ["data.size=16", "data.count=512", "data.max_objects=2", "clip.eval_count=16",
        "clip.width=32", "clip.layers=1", "clip.heads=2", "clip.embed_dim=32",
        "clip.channels=[8, 16, 32]", "train.steps=10", "train.batch_size=32",
        "train.checkpoint_every=10", "train.warmup_steps=2"]
TEXT = ["data.labels='text'", "data.max_objects=2", "model.attention_resolutions=[8]",
        "model.head_dim=8", "text.conditioning='both'"]
QUICK = {"steps": 4, "checkpoint_every": 2, "log_every": 1}  # of the fine-tune


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory, tiny_overrides: list[str]) -> Path:
    root = tmp_path_factory.mktemp("finetune")
    clip = train(load_recipe("clip-shapes", CLIP), root / "clip", progress=False)
    return train(load_recipe("shapes", [*tiny_overrides, *TEXT, f"text.encoder='{clip}'"]),
                 root / "base", progress=False)


@pytest.fixture(scope="module")
def subject(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Four pictures of one subject, as PNG files in a folder without captions."""
    folder = tmp_path_factory.mktemp("subject")
    images, _ = generate_shapes(4, 16, 7, 1)
    for i, image in enumerate(images):
        Image.fromarray(image.permute(1, 2, 0).numpy()).save(folder / f"{i}.png")
    return folder


def ema(run_dir: Path) -> dict[str, torch.Tensor]:
    return checkpoint.load_weights(run_dir, "ema")


def test_full_finetune_changes_the_unet_and_samples(base: Path, subject: Path,
                                                    tmp_path: Path) -> None:
    digest = weights_digest(base)
    out = train(finetune_recipe(base, tmp_path / "ft", subject, "a red circle", **QUICK),
                tmp_path / "ft", progress=False)
    before, after = ema(base), ema(out)
    assert before.keys() == after.keys()  # every weight of the U-Net, and nothing else
    assert any(not torch.equal(before[k], after[k]) for k in before)
    assert weights_digest(base) == digest  # the base run is not touched
    saved = json.loads((out / "config.json").read_text())
    assert saved["finetune"]["prompt"] == "a red circle" and saved["finetune"]["lora"] == 0
    assert saved["train"]["steps"] == 4 and not Path(saved["finetune"]["base"]).is_absolute()
    assert (out / saved["finetune"]["base"]).resolve() == base.resolve()  # relative to the run
    assert (out / "clip" / "clip.json").is_file()  # a whole run dir, like any other
    run = pipelines.load_run(out)
    options = dict(prompts=["a red circle"], steps=3, guidance=3.0, seed=1, progress=False)
    images = pipelines.sample(run, 2, **options)
    assert images.shape == (2, 3, 16, 16) and images.isfinite().all()
    assert not torch.equal(images, pipelines.sample(pipelines.load_run(base), 2, **options))


def test_lora_trains_only_adapters_and_merges_into_the_base(base: Path, subject: Path,
                                                            tmp_path: Path) -> None:
    out = train(finetune_recipe(base, tmp_path / "lora", subject, "a red circle", lora=2,
                                **QUICK), tmp_path / "lora", progress=False)
    adapters, base_weights = ema(out), ema(base)
    assert adapters and all(k.startswith("adapters.") for k in adapters)  # nothing else saved
    trainer = checkpoint.load_tensors(checkpoint.find(out) / "trainer.safetensors")
    moments = sum(v.numel() for k, v in trainer.items() if k.endswith("exp_avg"))
    assert moments == sum(v.numel() for v in adapters.values())  # AdamW saw the adapters only
    assert not (out / "clip").exists()  # the base's text encoder, by reference

    run, plain = pipelines.load_run(out), pipelines.load_run(base)
    merged = run.net.state_dict()
    changed = {k for k in merged if not torch.equal(merged[k], base_weights[k])}
    assert changed and all(k.rsplit(".", 1)[0].endswith(("qkv", "q", "kv", "proj", "cond_embed"))
                           for k in changed)  # the adapted layers only
    # unmerged: the base network with the adapters hooked in, as in training
    hooked = Adapted(plain.net, 2)
    hooked.load_state_dict(adapters)
    unmerged = pipelines.Run.from_parts(run.config, hooked, plain.schedule, out, {}, plain.text)
    options = dict(prompts=["a red circle"], steps=3, guidance=3.0, seed=2, progress=False)
    torch.testing.assert_close(pipelines.sample(run, 3, **options),
                               pipelines.sample(unmerged, 3, **options), atol=1e-3, rtol=0)

    fresh = Adapted(pipelines.load_run(base).net, 2)  # B = 0: the base, bit for bit
    start = pipelines.Run.from_parts(run.config, fresh, plain.schedule, out, {}, plain.text)
    base_run = pipelines.load_run(base)
    assert torch.equal(pipelines.sample(start, 3, **options),
                       pipelines.sample(base_run, 3, **options))


def test_prior_preservation_images_come_from_the_base_and_enter_the_loss(
        base: Path, subject: Path, tmp_path: Path) -> None:
    config = finetune_recipe(base, tmp_path / "prior", subject, "a red circle",
                             class_prompt="a circle", class_images=5, prior_weight=0.5,
                             lora=2, **QUICK)
    out = train(config, tmp_path / "prior", progress=False)
    drawn = checkpoint.load_tensors(out / CLASS_IMAGES)["images"]
    original = pipelines.load_run(base)
    s = original.config.sample
    expected = pipelines.sample(original, 5, prompts=["a circle"], sampler=s.sampler,
                                steps=s.steps, guidance=s.guidance, progress=False,
                                seed=seed_for(config.train.seed, CLASS_SEED))
    assert drawn.shape == (5, 3, 16, 16)
    assert torch.equal(drawn, ((expected + 1) * 127.5).round().to(torch.uint8))
    records = [r for r in map(json.loads, (out / "log.jsonl").read_text().splitlines())
               if "loss" in r]
    assert len(records) == 4
    for r in records:  # loss = subject term + 0.5 * prior term, each step
        assert r["prior"] > 0 and r["loss"] == pytest.approx(r["subject"] + 0.5 * r["prior"])
    without = train(finetune_recipe(base, tmp_path / "none", subject, "a red circle", lora=2,
                                    **QUICK), tmp_path / "none", progress=False)
    assert not (without / CLASS_IMAGES).exists()
    assert any(not torch.equal(v, ema(without)[k]) for k, v in ema(out).items())


def test_resume_is_exact_and_a_killed_start_does_not_block(
        base: Path, subject: Path, tmp_path: Path, killed_after_checkpoint) -> None:
    def recipe(out: Path):
        return finetune_recipe(base, out, subject, "a red circle", class_prompt="a circle",
                               class_images=3, lora=2, **QUICK)

    whole = train(recipe(tmp_path / "whole"), tmp_path / "whole", progress=False)
    killed_after_checkpoint(recipe(tmp_path / "resumed"), tmp_path / "resumed")
    assert checkpoint.read_json(checkpoint.find(tmp_path / "resumed") / "state.json")["step"] == 2
    resumed = train(recipe(tmp_path / "resumed"), tmp_path / "resumed", progress=False)
    for which in ("ema", "model"):
        a, b = (checkpoint.load_weights(r, which) for r in (whole, resumed))
        assert all(torch.equal(a[k], b[k]) for k in a)

    # what `kill -9` before the first checkpoint leaves: the lock file, config.json and class
    # images of other settings
    left = tmp_path / "left"
    left.mkdir()
    for name in (".lock", "config.json", CLASS_IMAGES):
        shutil.copy(whole / name, left / name)
    again = train(finetune_recipe(base, left, subject, "a red circle", class_prompt="a square",
                                  class_images=3, lora=2, **QUICK), left, progress=False)
    assert checkpoint.find(again) is not None
    assert not torch.equal(checkpoint.load_tensors(left / CLASS_IMAGES)["images"],
                           checkpoint.load_tensors(whole / CLASS_IMAGES)["images"])


@pytest.mark.parametrize("lora", [0, 2])
def test_tokens_learned_for_the_base_read_in_prompts(base: Path, subject: Path, tmp_path: Path,
                                                     lora: int) -> None:
    """A token of textual inversion (RUN/tokens) in the prompt: the fine-tune reads it as the
    base's sampler does, and so does its own run dir (a copy; LoRA: the base's)."""
    from inkfuse.artifacts.tokens import save_token

    copy = tmp_path / "base"
    shutil.copytree(base, copy)
    text = pipelines.load_run(copy).text
    save_token(copy, "<thing>", text.embedding_of("red") + 0.5, text.identity)
    out = train(finetune_recipe(copy, tmp_path / "ft", subject, "a <thing> circle", lora=lora,
                                **QUICK), tmp_path / "ft", progress=False)
    assert (out / "tokens").is_dir() == (not lora)
    run = pipelines.load_run(out)
    images = pipelines.sample(run, 2, prompts=["a <thing> circle"], steps=2, progress=False)
    assert images.shape == (2, 3, 16, 16)


def test_a_changed_base_is_refused_on_load(base: Path, subject: Path, tmp_path: Path) -> None:
    copy = tmp_path / "base"
    shutil.copytree(base, copy)
    out = train(finetune_recipe(copy, tmp_path / "lora", subject, "a red circle", lora=2,
                                **QUICK), tmp_path / "lora", progress=False)
    weights = ema(copy)
    first = next(iter(weights))
    weights[first] = weights[first] + 1
    checkpoint.save_tensors(checkpoint.find(copy) / "ema.safetensors", weights)
    with pytest.raises(CheckpointError, match="has changed since the adapters"):
        pipelines.load_run(out)


def one_line_error(capsys: pytest.CaptureFixture, argv: list[str]) -> str:
    capsys.readouterr()
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert err.startswith("inkfuse: error: ") and err.count("\n") == 1
    return err


def test_bad_input_is_one_line_and_writes_nothing(base: Path, subject: Path, tmp_path: Path,
                                                 tiny_overrides: list[str], capsys) -> None:
    new = tmp_path / "new"
    cmd = ["finetune", str(base), "--images", str(subject), "--prompt", "a red circle",
           "--steps", "2", "--quiet", "--out", str(new)]
    empty = tmp_path / "empty"
    empty.mkdir()
    assert "has no images" in one_line_error(capsys, [*cmd[:3], str(empty), *cmd[4:]])
    assert "never saw in training: zebra" in one_line_error(
        capsys, [*cmd[:5], "a red zebra", *cmd[6:]])
    assert "never saw in training" in one_line_error(capsys, [*cmd, "--class-prompt", "a zebra"])
    assert "is no low rank" in one_line_error(capsys, [*cmd, "--lora", "1000"])
    assert not new.exists()

    classes = train(load_recipe("shapes", tiny_overrides), tmp_path / "classes", progress=False)
    assert "not on text" in one_line_error(capsys, ["finetune", str(classes), *cmd[2:]])
    assert not new.exists()

    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    assert "is not a run dir" in one_line_error(capsys, [*cmd[:-1], str(mine)])
    assert "not a fine-tune" in one_line_error(capsys, [*cmd[:-1], str(classes)])
    assert sorted(p.name for p in mine.iterdir()) == ["notes.txt"]
    train(finetune_recipe(base, new, subject, "a red circle", steps=2), new, progress=False)
    copy = tmp_path / "base-copy"
    shutil.copytree(base, copy)
    assert "a fine-tune of" in one_line_error(capsys, ["finetune", str(copy), *cmd[2:]])
    assert main(cmd) == 0  # the same fine-tune again: resumed, nothing to do
