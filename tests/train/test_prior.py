"""unCLIP on tiny runs: the diffusion prior trains after the decoder (and alone, for a decoder
trained without one), resumes exactly, maps captions near their images' CLIP embeddings, feeds
the decoder unless told not to; image variations; the benchmark's two ways; one-line errors."""

from __future__ import annotations

import importlib.util
import json
import shutil
import sys
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from inkfuse import pipelines
from inkfuse.cli import main
from inkfuse.config import RECIPES_DIR, PriorModelConfig, load_recipe, read_recipe, recipe_kind
from inkfuse.data import build_dataset
from inkfuse.errors import ConfigError
from inkfuse.nn.prior import PriorTransformer, from_prior_space, to_prior_space
from inkfuse.train import train
from inkfuse.train.prior import prior_config

pytestmark = pytest.mark.usefixtures("one_thread")

DECODER = ["data.labels='clip-image'", "data.max_objects=2", "data.caption_dropout=0.3",
           "data.holdout=0.1"]
PRIOR = ["prior.steps=40", "prior.width=32", "prior.depth=1", "prior.heads=2",
         "prior.batch_size=16", "prior.warmup_steps=2", "prior.checkpoint_every=20",
         "prior.timesteps=50", "prior.sample_steps=4", "prior.lr=2e-3", "prior.ema_decay=0.95"]
# what `inkfuse prior train` is given on top of the built-in recipe's [prior] table
SMALL = ["prior.steps=4", "prior.width=32", "prior.depth=1", "prior.batch_size=16",
         "prior.sample_steps=2"]


@pytest.fixture(scope="module")
def unclip_run(tmp_path_factory: pytest.TempPathFactory, tiny_overrides: list[str]) -> Path:
    """A 10-step CLIP, 6 decoder steps, then 40 prior steps: about 25 s on a busy core."""
    config = load_recipe("shapes", [*tiny_overrides, *DECODER, "text.clip_steps=10", *PRIOR])
    return train(config, tmp_path_factory.mktemp("unclip") / "run", progress=False)


@pytest.fixture(scope="module")
def class_run(tmp_path_factory: pytest.TempPathFactory, tiny_overrides: list[str]) -> Path:
    return train(load_recipe("shapes", tiny_overrides),
                 tmp_path_factory.mktemp("class") / "run", progress=False)


def decoder_only(run: Path, to: Path, keep_table: bool = True) -> Path:
    """A copy of `run` without its prior; without `keep_table` its config.json also loses the
    [prior] table, as a run trained before the table existed."""
    shutil.copytree(run, to, ignore=shutil.ignore_patterns("prior"))
    if not keep_table:
        saved = json.loads((to / "config.json").read_text())
        del saved["prior"]
        (to / "config.json").write_text(json.dumps(saved))
    return to


def same_tensors(a: Path, b: Path) -> bool:
    x, y = load_file(str(a)), load_file(str(b))
    return x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x)


# ----------------------------------------------------------------------------- config, network


def test_only_the_unclip_recipe_trains_a_prior() -> None:
    for path in RECIPES_DIR.glob("*.toml"):
        if recipe_kind(read_recipe(path)[0]) != "diffusion":
            continue
        steps = load_recipe(path).prior.steps
        assert (steps > 0) == (path.stem == "shapes-unclip"), path.name


@pytest.mark.parametrize(("sets", "message"), [
    (["prior.steps=10"], "needs a decoder of CLIP image embeddings"),
    (["data.labels='clip-image'", "prior.width=30"], "not divisible by prior.heads = 4"),
    (["data.labels='clip-image'", "prior.width=33", "prior.heads=1"], "must be even"),
])
def test_bad_prior_tables_are_refused(sets: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_recipe("shapes", sets)


def test_prior_space_and_network_shapes() -> None:
    e = torch.nn.functional.normalize(torch.randn(64, 16), dim=1)
    x = to_prior_space(e)
    assert x.pow(2).mean().item() == pytest.approx(1.0, rel=1e-5)  # unit variance per entry
    assert torch.allclose(from_prior_space(3 * x), e, atol=1e-6)
    net = PriorTransformer(PriorModelConfig(width=16, depth=1, heads=2, embed_dim=16,
                                            token_dim=8))
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 0, 0, 0]], dtype=torch.bool)
    tokens = torch.randn(2, 5, 8)
    args = (torch.randn(2, 16), torch.tensor([3, 7]), torch.randn(2, 16))
    out = net(*args, tokens=tokens, mask=mask)
    assert out.shape == (2, 16)
    # padding is masked: what it holds, and how much of it there is, changes nothing
    noisy = tokens.clone()
    noisy[~mask] = 100.0
    assert torch.allclose(net(*args, tokens=noisy, mask=mask), out, atol=1e-5)
    longer = torch.cat([tokens, torch.randn(2, 4, 8)], dim=1)
    assert torch.allclose(net(*args, tokens=longer, mask=torch.cat(
        [mask, torch.zeros(2, 4, dtype=torch.bool)], dim=1)), out, atol=1e-5)
    with pytest.raises(ValueError, match="empty prompt"):  # no learned null to read `drop` with
        net(*args, tokens=tokens, mask=mask, drop=torch.tensor([True, False]))


# ----------------------------------------------------------------------------- training


def test_the_prior_trains_after_the_decoder_and_learns(unclip_run: Path) -> None:
    meta = json.loads((unclip_run / "prior" / "prior.json").read_text())
    clip = json.loads((unclip_run / "clip" / "clip.json").read_text())["model"]
    assert meta["model"]["embed_dim"] == clip["embed_dim"]
    assert meta["model"]["token_dim"] == clip["width"]
    m = meta["metrics"]
    assert m["steps"] == 40 and m["loss_last"] < 0.5 * m["loss_first"]
    # through the loaded run: the prior's embedding of a training caption lies much closer to
    # its image's CLIP embedding than the caption's text embedding does (the modality gap)
    run = pipelines.load_run(unclip_run)
    data = build_dataset(run.config.data, seed=run.config.train.seed)
    captions, true = data.captions[:16], run.text.encode_images(data.images[:16])
    drawn = pipelines.prior_embeddings(run, captions, seed=1)
    assert drawn.shape == true.shape
    assert torch.allclose(drawn.norm(dim=1), torch.ones(16), atol=1e-5)
    text = run.text.encode(captions).vector
    assert (drawn * true).sum(1).mean() > (text * true).sum(1).mean() + 0.3


def test_the_prior_resumes_exactly_without_the_decoder(unclip_run: Path, tmp_path: Path,
                                                       tiny_overrides: list[str],
                                                       killed_after_checkpoint) -> None:
    """Rerunning the recipe on a finished decoder trains only the prior; killed after its
    first checkpoint it ends with the weights of the run that never stopped (the fixture)."""
    config = load_recipe("shapes", [*tiny_overrides, *DECODER, "text.clip_steps=10", *PRIOR])
    resumed = decoder_only(unclip_run, tmp_path / "resumed")
    decoder = (resumed / "checkpoint" / "ema.safetensors").read_bytes()
    killed_after_checkpoint(config, resumed)
    assert json.loads((resumed / "prior/checkpoint/state.json").read_text())["step"] == 20
    train(config, resumed, progress=False)
    for name in ("checkpoint/model.safetensors", "checkpoint/ema.safetensors",
                 "checkpoint/trainer.safetensors", "prior.safetensors"):
        assert same_tensors(unclip_run / "prior" / name, resumed / "prior" / name), name
    assert (resumed / "checkpoint" / "ema.safetensors").read_bytes() == decoder


def test_the_prior_table_leaves_the_decoder_alone(unclip_run: Path, tmp_path: Path,
                                                  tiny_overrides: list[str]) -> None:
    base = [*tiny_overrides, *DECODER, f"text.encoder='{unclip_run / 'clip'}'"]
    plain = train(load_recipe("shapes", base), tmp_path / "plain", progress=False)
    with_prior = train(load_recipe("shapes", [*base, *PRIOR]), tmp_path / "prior",
                       progress=False)
    for name in ("model", "ema", "trainer"):
        assert same_tensors(plain / f"checkpoint/{name}.safetensors",
                            with_prior / f"checkpoint/{name}.safetensors"), name
    assert (with_prior / "prior" / "prior.json").is_file() and not (plain / "prior").exists()


def test_prior_config_takes_the_table_of_a_recipe(unclip_run: Path, tmp_path: Path) -> None:
    old = decoder_only(unclip_run, tmp_path / "old", keep_table=False)
    builtin = asdict(load_recipe("shapes-unclip").prior)
    assert asdict(prior_config(old).prior) == builtin  # a run from before the table
    own = asdict(prior_config(unclip_run).prior)
    assert own["steps"] == 40 and own["width"] == 32  # the run's own table
    recipe = tmp_path / "mine.toml"
    recipe.write_text("[data]\nlabels = 'clip-image'\n[prior]\nsteps = 7\nheads = 8\n")
    mine = prior_config(unclip_run, recipe, ["prior.steps=9"]).prior
    assert (mine.steps, mine.heads, mine.width) == (9, 8, 128)


# ----------------------------------------------------------------------------- sampling


def test_prompts_go_through_the_prior_unless_told(unclip_run: Path) -> None:
    run = pipelines.load_run(unclip_run)
    assert run.prior is not None and run.prior.settings.sample_steps == 4
    options = dict(prompts=["a red circle"], steps=2, progress=False)
    a = pipelines.sample(run, 3, seed=3, **options)
    assert a.shape == (3, 3, 16, 16)
    assert torch.equal(a, pipelines.sample(run, 3, seed=3, **options))
    assert not torch.equal(a, pipelines.sample(run, 3, seed=4, **options))
    plain = pipelines.sample(run, 3, seed=3, use_prior=False, **options)
    assert plain.shape == a.shape and not torch.equal(a, plain)
    old = pipelines.load_run(unclip_run, prior=False)  # what a run without a prior does
    assert old.prior is None and torch.equal(plain, pipelines.sample(old, 3, seed=3, **options))
    assert torch.equal(plain, pipelines.sample(old, 3, seed=3, use_prior=False, **options))
    assert not torch.equal(a, pipelines.sample(run, 3, seed=3, prior_steps=1, **options))
    mixed = pipelines.sample(run, 2, prompts=["a red circle :0.5 | a blue square :0.5"],
                             steps=2, progress=False)
    assert mixed.shape == (2, 3, 16, 16) and mixed.isfinite().all()
    with pytest.raises(ConfigError, match="--no-prior turns it off"):
        pipelines.sample(run, 1, seed=3, use_prior=False, prior_steps=2, **options)
    with pytest.raises(ConfigError, match="has none"):
        pipelines.sample(old, 1, seed=3, prior_guidance=2.0, **options)


def test_variations_decode_an_images_own_embedding(unclip_run: Path, class_run: Path) -> None:
    run = pipelines.load_run(unclip_run, prior=False)
    image = (torch.rand(3, 20, 24) * 255).to(torch.uint8)  # any size: cropped and resized
    v = pipelines.variations(run, image, 3, steps=2, seed=1, progress=False)
    assert v.shape == (3, 3, 16, 16)
    assert torch.equal(v, pipelines.variations(run, image[None], 3, steps=2, seed=1,
                                               progress=False))
    assert not torch.equal(v, pipelines.variations(run, image, 3, steps=2, seed=2,
                                                   progress=False))
    with pytest.raises(ConfigError, match="uint8"):
        pipelines.variations(run, image.float(), 2)
    with pytest.raises(ConfigError, match="not on CLIP image embeddings"):
        pipelines.variations(pipelines.load_run(class_run), image, 2)


def test_the_alignment_benchmark_scores_both_ways(unclip_run: Path, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    script = Path(__file__).resolve().parents[2] / "benchmarks" / "text_alignment.py"
    spec = importlib.util.spec_from_file_location("text_alignment", script)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    titles = {}
    for name, flags in (("prior", []), ("no-prior", ["--no-prior"])):
        out = tmp_path / f"{name}.md"
        monkeypatch.setattr(sys, "argv", ["text_alignment.py", str(unclip_run), "--n", "1",
                                          "--singles", "3", "--pairs", "3", "--guidance", "1",
                                          "--steps", "2", "--out", str(out), *flags])
        bench.main()
        titles[name] = out.read_text().splitlines()[0]
        assert bench.conditioning(pipelines.load_run(unclip_run, prior=not flags)) == name
    assert "through its diffusion prior" in titles["prior"]
    assert "without a prior" in titles["no-prior"]


# ----------------------------------------------------------------------------- the CLI


def test_cli_gives_an_old_decoder_a_prior_then_samples_and_varies(unclip_run: Path,
                                                                   tmp_path: Path,
                                                                   capsys) -> None:
    old = decoder_only(unclip_run, tmp_path / "old", keep_table=False)
    decoder, saved = ((old / "checkpoint/ema.safetensors").read_bytes(),
                      (old / "config.json").read_text())
    sets = [a for s in SMALL for a in ("--set", s)]
    assert main(["prior", "train", str(old), "--quiet", *sets]) == 0
    assert "cosine" in capsys.readouterr().out
    table = json.loads((old / "prior" / "prior.json").read_text())["prior"]
    builtin = load_recipe("shapes-unclip").prior
    assert (table["steps"], table["heads"], table["lr"]) == (4, builtin.heads, builtin.lr)
    assert (old / "checkpoint/ema.safetensors").read_bytes() == decoder  # not retrained
    assert (old / "config.json").read_text() == saved
    arrays = {}
    for name, flags in (("prior", ["--prior-steps", "2"]), ("plain", ["--no-prior"])):
        out = tmp_path / f"{name}.npz"
        assert main(["sample", str(old), "--prompt", "a red circle", "--n", "2", "--steps", "2",
                     *flags, "--out", str(out)]) == 0
        arrays[name] = np.load(out)["images"]
    assert arrays["prior"].shape == arrays["plain"].shape == (2, 16, 16, 3)
    assert not np.array_equal(arrays["prior"], arrays["plain"])
    image = tmp_path / "in.png"
    Image.fromarray((np.random.default_rng(0).random((20, 30, 3)) * 255).astype(np.uint8)
                    ).save(image)
    grid = tmp_path / "v.png"
    assert main(["variations", str(old), "--image", str(image), "--n", "3", "--steps", "2",
                 "--out", str(grid)]) == 0
    assert Image.open(grid).size[0] > 3 * Image.open(grid).size[1]  # one row: input + 3


def refused(argv: list[str], capsys, message: str) -> None:
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert err.startswith("inkfuse: error: ") and err.count("\n") == 1, err
    assert message in err and "Traceback" not in err, err


def test_cli_bad_input_is_one_line(unclip_run: Path, class_run: Path, tmp_path: Path,
                                   capsys, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    old = decoder_only(unclip_run, tmp_path / "old", keep_table=False)
    good = tmp_path / "in.png"
    Image.fromarray(np.zeros((16, 16, 3), dtype=np.uint8)).save(good)
    (tmp_path / "bad.png").write_text("not a png")
    run, cls = str(unclip_run), str(class_run)
    refused(["prior", "train", cls], capsys, "needs a decoder of CLIP image embeddings")
    refused(["prior", "train", str(old), "--set", "data.size=8"], capsys,
            "takes only prior.KEY=VALUE")
    refused(["prior", "train", str(old), "--set", "prior.steps=0"], capsys,
            "prior.steps = 0 trains no prior")
    refused(["prior", "train", str(tmp_path / "nowhere")], capsys, "does not exist")
    assert not (old / "prior").exists() and not (class_run / "prior").exists()
    refused(["sample", run, "--prompt", "a red circle", "--no-prior", "--prior-steps", "2",
             "--out", "x.png"], capsys, "that --no-prior turns off")
    refused(["sample", cls, "--prior-steps", "2", "--out", "x.png"], capsys, "has none")
    refused(["variations", cls, "--image", str(good)], capsys, "not on CLIP image embeddings")
    refused(["variations", run, "--image", "missing.png"], capsys, "not found")
    refused(["variations", run, "--image", "bad.png"], capsys, "not a readable image")
    refused(["variations", run, "--image", str(good), "--n", "0"], capsys, "at least 1")
    assert not list(tmp_path.glob("*variations.png")) and not (tmp_path / "x.png").exists()


def test_cli_damaged_or_unfinished_priors_are_one_line(unclip_run: Path, tmp_path: Path,
                                                       capsys) -> None:
    out = str(tmp_path / "x.png")
    for damage, message in (("weights", "truncated or corrupt"), ("json", "prior.json is "
                                                                          "damaged"),
                            ("unfinished", "holds an unfinished prior")):
        bad = tmp_path / damage
        shutil.copytree(unclip_run, bad)
        if damage == "weights":
            weights = bad / "prior" / "prior.safetensors"
            weights.write_bytes(weights.read_bytes()[:300])
        elif damage == "json":
            (bad / "prior" / "prior.json").write_text('{"format": 3')
        else:  # a prior still training, or killed before its end: its checkpoint only
            (bad / "prior" / "prior.json").unlink()
        refused(["sample", str(bad), "--prompt", "a red circle", "--out", out], capsys,
                message)
        assert main(["sample", str(bad), "--prompt", "a red circle", "--no-prior", "--n", "1",
                     "--steps", "2", "--out", out]) == 0  # the decoder alone still samples
