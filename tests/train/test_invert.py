"""Textual inversion of a tiny text run end to end: only the new row changes, the token is saved
beside the run and read by every later load (`pipelines.sample`, `inkfuse sample`), a rerun
resumes exactly, and bad input is refused by the CLI in one line with nothing left behind."""

from __future__ import annotations

import csv
import hashlib
import importlib.util
import shutil
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

from inkfuse import pipelines
from inkfuse.artifacts import checkpoint
from inkfuse.artifacts.tokens import work_dir
from inkfuse.cli import main
from inkfuse.config import InvertConfig, load_recipe
from inkfuse.data.shapes import ShapeSpec, caption, render
from inkfuse.errors import ConfigError
from inkfuse.train import train
from inkfuse.train.invert import invert

pytestmark = pytest.mark.usefixtures("one_thread")

# a CLIP of a few seconds (tiny towers, its own 512 captions), then a tiny text U-Net on it
CLIP = ["data.size=16", "data.count=512", "data.max_objects=2", "clip.eval_count=16",
        "clip.width=32", "clip.layers=1", "clip.heads=2", "clip.embed_dim=32",
        "clip.channels=[8, 16, 32]", "train.steps=10", "train.batch_size=32",
        "train.checkpoint_every=10", "train.warmup_steps=2", "data.withhold=['magenta']"]
TEXT = ["data.labels='text'", "data.max_objects=2", "model.attention_resolutions=[8]",
        "model.head_dim=8", "text.conditioning='both'", "data.withhold=['magenta']"]
QUICK = ["--steps", "4", "--set", "train.checkpoint_every=2", "--set", "train.batch_size=4",
         "--quiet"]


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("invert")


@pytest.fixture(scope="module")
def clip(root: Path) -> Path:
    return train(load_recipe("clip-shapes", CLIP), root / "clip", progress=False)


@pytest.fixture(scope="module")
def text_run(root: Path, clip: Path, tiny_overrides: list[str]) -> Path:
    """A text run whose images and captions never had magenta."""
    return train(load_recipe("shapes", [*tiny_overrides, *TEXT, f"text.encoder='{clip}'"]),
                 root / "text", progress=False)


@pytest.fixture(scope="module")
def images(root: Path) -> Path:
    """Four magenta shapes, captioned with the token where the colour was."""
    folder = root / "magenta"
    folder.mkdir()
    specs = [ShapeSpec("circle", "magenta", "small", 0.2, 0.2),
             ShapeSpec("square", "magenta", "large", 0.5, 0.5),
             ShapeSpec("cross", "magenta", "large", 0.78, 0.22),
             ShapeSpec("triangle", "magenta", "small", 0.5, 0.8)]
    with open(folder / "captions.csv", "w", newline="") as f:
        rows = csv.writer(f)
        rows.writerow(["path", "caption"])
        for i, spec in enumerate(specs):
            Image.fromarray(render([spec], 16).permute(1, 2, 0).numpy()).save(folder / f"{i}.png")
            rows.writerow([f"{i}.png", caption([spec]).replace("magenta", "<mag>")])
    return folder


@pytest.fixture(scope="module")
def plain(root: Path, images: Path) -> Path:
    """The same images without captions.csv: captioned by templates."""
    folder = root / "plain"
    folder.mkdir()
    for png in images.glob("*.png"):
        shutil.copy(png, folder)
    return folder


def copy_run(run: Path, to: Path) -> Path:
    shutil.copytree(run, to)
    return to


def digests(run: Path) -> dict[str, str]:
    """sha256 of every file of the run itself (its checkpoint, config, CLIP), RUN/tokens left
    out."""
    return {str(p.relative_to(run)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(run.rglob("*")) if p.is_file() and "tokens" not in p.parts}


def test_only_the_new_row_is_learned_and_prompts_read_it(text_run: Path, images: Path,
                                                         tmp_path: Path, capsys) -> None:
    run_dir = copy_run(text_run, tmp_path / "run")
    before = pipelines.load_run(run_dir)
    files = digests(run_dir)
    assert main(["invert", str(run_dir), "--images", str(images), "--token", "<mag>",
                 "--init", "red", *QUICK]) == 0
    assert "learned '<mag>'" in capsys.readouterr().out
    assert digests(run_dir) == files  # nothing of the run itself was written
    after = pipelines.load_run(run_dir)
    assert after.text.learned == ["<mag>"]
    # every weight as before, the U-Net's and the CLIP's (its token table now inside a TokenTable)
    net_after = after.net.state_dict()
    assert all(torch.equal(v, net_after[k]) for k, v in before.net.state_dict().items())
    clip_after = after.text.model.state_dict()
    for name, value in before.text.model.state_dict().items():
        key = "text.token.base.weight" if name == "text.token.weight" else name
        assert torch.equal(value, clip_after[key]), name
    row = after.text.model.text.token.rows[0]
    red = before.text.embedding_of("red")
    assert not torch.equal(row, red) and (row - red).abs().max() < 4 * 5e-3 * 1.01  # 4 Adam steps
    # the token changes what the prompt reads; prompts without it read as before
    plain = before.text.encode(["a red circle"])
    assert torch.equal(after.text.encode(["a red circle"]).tokens, plain.tokens)
    assert not torch.equal(after.text.encode(["a <mag> circle"]).tokens, plain.tokens)
    options = dict(steps=2, guidance=3.0, progress=False, seed=1)
    with_token = pipelines.sample(after, 2, prompts=["a <mag> circle above a red square"],
                                  **options)
    assert with_token.shape == (2, 3, 16, 16) and with_token.isfinite().all()
    assert main(["sample", str(run_dir), "--prompt", "a small <mag> cross", "--n", "2",
                 "--steps", "2", "--out", str(tmp_path / "x.png")]) == 0
    with pytest.raises(ConfigError, match="never saw in training: magenta"):
        pipelines.sample(after, 1, prompts=["a magenta circle"], steps=2, progress=False)


def test_uncaptioned_images_learn_from_templates(text_run: Path, plain: Path,
                                                 tmp_path: Path) -> None:
    run_dir = copy_run(text_run, tmp_path / "run")
    config = InvertConfig.from_dict({"invert": {"images": str(plain), "token": "<thing>"},
                                     "train": {"steps": 2, "batch_size": 4}})
    path = invert(run_dir, config, progress=False)
    assert path == run_dir / "tokens" / "thing.safetensors" and path.is_file()
    state = checkpoint.read_json(checkpoint.find(work_dir(run_dir, "<thing>")) / "state.json")
    assert state["step"] == 2 and state["config"]["invert"]["init"] == ""


def test_an_interrupted_inversion_resumes_exactly(text_run: Path, plain: Path, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    run_dir = copy_run(text_run, tmp_path / "run")
    args = ["invert", str(run_dir), "--images", str(plain), "--init", "red", *QUICK]
    assert main([*args, "--token", "<whole>"]) == 0
    real_save = checkpoint.save

    def save_then_die(*a, **k):
        real_save(*a, **k)
        raise KeyboardInterrupt

    monkeypatch.setattr(checkpoint, "save", save_then_die)
    assert main([*args, "--token", "<cut>"]) == 130  # killed after its first checkpoint
    monkeypatch.setattr(checkpoint, "save", real_save)
    assert not (run_dir / "tokens" / "cut.safetensors").exists()
    assert checkpoint.read_json(work_dir(run_dir, "<cut>") / "checkpoint" / "state.json")[
        "step"] == 2
    assert main([*args, "--token", "<cut>"]) == 0  # the same command resumes
    # the token's name draws nothing (templates, one id): a resumed run ends where an unbroken
    # one did
    rows = pipelines.load_run(run_dir).text.model.text.token.rows
    assert torch.equal(rows[0], rows[1])
    # resuming with other images is refused; --force starts over
    other = tmp_path / "other"
    shutil.copytree(plain, other)
    (run_dir / "tokens" / "cut.safetensors").unlink()
    assert main(["invert", str(run_dir), "--images", str(other), "--init", "red", *QUICK,
                 "--token", "<cut>"]) == 1
    assert main(["invert", str(run_dir), "--images", str(other), "--init", "red", *QUICK,
                 "--token", "<cut>", "--force"]) == 0


@pytest.fixture(scope="module")
def class_run(root: Path, tiny_overrides: list[str]) -> Path:
    return train(load_recipe("shapes", tiny_overrides), root / "class", progress=False)


@pytest.fixture(scope="module")
def clip_image_run(root: Path, clip: Path, tiny_overrides: list[str]) -> Path:
    return train(load_recipe("shapes", [*tiny_overrides, "data.labels='clip-image'",
                                        "data.withhold=['magenta']", f"text.encoder='{clip}'"]),
                 root / "clip-image", progress=False)


@pytest.mark.parametrize(("case", "message"), [
    ("missing folder", "is not a folder"),
    ("empty folder", "has no images"),
    ("known word", "'red' is a word the text encoder knows already"),
    ("spaces", "has spaces"),
    ("learned already", "is learned already for"),
    ("caption without token", "does not contain the token '<new>'"),
    ("unknown init", "the text encoder never read zebra"),
    ("class run", "data.labels = 'class', not on text"),
    ("clip-image run", "data.labels = 'clip-image', not on text"),
    ("no run", "is not a run dir"),
])
def test_bad_input_is_one_line_and_leaves_nothing(case: str, message: str, text_run: Path,
                                                  images: Path, class_run: Path,
                                                  clip_image_run: Path, tmp_path: Path,
                                                  capsys) -> None:
    run = {"class run": class_run, "clip-image run": clip_image_run,
           "no run": tmp_path / "nothing"}.get(case, text_run)
    run = copy_run(run, tmp_path / "run") if run.exists() else run
    folder, token, extra = images, "<mag>" if case == "caption without token" else "<new>", []
    if case == "missing folder":
        folder = tmp_path / "nope"
    elif case == "empty folder":
        folder = tmp_path / "empty"
        folder.mkdir()
    elif case == "known word":
        token = "red"
    elif case == "spaces":
        token = "<a new>"
    elif case == "unknown init":
        extra = ["--init", "zebra"]
    elif case == "caption without token":
        token = "<new>"
    elif case == "learned already":
        assert main(["invert", str(run), "--images", str(images), "--token", "<mag>",
                     *QUICK]) == 0
        token = "<mag>"
    capsys.readouterr()
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    assert main(["invert", str(run), "--images", str(folder), "--token", token, *extra,
                 *QUICK]) == 1
    err = capsys.readouterr().err
    assert err.startswith("inkfuse: error: ") and err.count("\n") == 1, err
    assert message in err and "Traceback" not in err
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before


@pytest.mark.slow  # an inversion, then ~100 samples and a picture: 10 s or more
def test_the_benchmark_runs_end_to_end(text_run: Path, tmp_path: Path,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    bench_dir = Path(__file__).resolve().parents[2] / "benchmarks"
    monkeypatch.syspath_prepend(str(bench_dir))
    spec = importlib.util.spec_from_file_location("textual_inversion",
                                                  bench_dir / "textual_inversion.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    run_dir = copy_run(text_run, tmp_path / "run")
    out = tmp_path / "ti.md"
    monkeypatch.setattr(sys, "argv", [
        "textual_inversion.py", str(run_dir), "--withheld", "magenta", "--images", "5",
        "--steps", "3", "--singles", "6", "--pairs", "4", "--sampler-steps", "2",
        "--out", str(out)])
    bench.main()
    table = out.read_text()
    assert "| token `<magenta>` |" in table and "| init word `red` (baseline) |" in table
    assert out.with_suffix(".png").is_file()
    assert len(list((tmp_path / "ti-images").glob("*.png"))) == 5
    assert pipelines.load_run(run_dir).text.learned == ["<magenta>"]
