"""Inpainting and img2img on a tiny shapes run: exactness, a known completion, the CLI."""

import numpy as np
import pytest
import torch
from PIL import Image

import inkfuse
from inkfuse.cli import main
from inkfuse.data.shapes import generate_shapes
from inkfuse.editing import img2img, inpaint
from inkfuse.errors import ConfigError, DataError
from inkfuse.pipelines import sample


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, tiny_overrides):
    """A tiny 16 px shapes run trained a little longer (200 steps) so it can complete."""
    config = inkfuse.load_recipe("shapes", [*tiny_overrides, "train.steps=200",
                                            "train.checkpoint_every=200", "train.log_every=50"])
    return inkfuse.train(config, tmp_path_factory.mktemp("editing") / "run", progress=False)


@pytest.fixture(scope="module")
def run(run_dir):
    return inkfuse.load_run(run_dir)


@pytest.fixture(scope="module")
def truth():
    """16 real shapes images (a seed the run was not trained on) in [-1, 1]."""
    return generate_shapes(16, 16, seed=123)[0].float() / 127.5 - 1


def left_half(size=16):
    mask = torch.zeros(1, 1, size, size)
    mask[..., : size // 2] = 1
    return mask


def test_inpaint_keeps_unmasked_pixels_exactly(run, truth):
    mask = torch.rand(1, 1, 16, 16, generator=torch.Generator().manual_seed(0)).round()
    out = inpaint(run, truth[:4], mask, steps=10, resample=2, labels=[1], guidance=2.0,
                  progress=False)
    keep = (mask == 0).expand_as(out[:, :1]).expand_as(out)
    assert out.shape == truth[:4].shape and torch.equal(out[keep], truth[:4][keep])
    assert not torch.equal(out[~keep], truth[:4][~keep])
    assert torch.equal(inpaint(run, truth[:2], torch.zeros(16, 16), progress=False), truth[:2])


def test_inpaint_completes_shapes_better_than_noise(run, truth):
    """Fill the left half of 16 held-out images; MSE over the hole (values in [-1, 1]) of the fill
    against the truth must beat (a) uniform-range noise clamped to [-1, 1] and (b) an
    unconditional sample of the same run, which sees nothing of the known right half; the
    margins leave room for other seeds."""
    mask = left_half()
    out = inpaint(run, truth, mask, steps=25, progress=False)
    hole = mask.bool().expand_as(truth)
    mse = lambda x: ((x - truth)[hole] ** 2).mean().item()  # noqa: E731
    noise = torch.randn(truth.shape, generator=torch.Generator().manual_seed(0)).clamp(-1, 1)
    free = sample(run, len(truth), steps=25, guidance=1.0, progress=False)
    assert mse(out) < 0.6 * mse(noise)
    assert mse(out) < 0.8 * mse(free)


def test_inpaint_same_seed_same_output(run, truth):
    a, b, c = (inpaint(run, truth[:2], left_half(), steps=5, seed=s, progress=False)
               for s in (1, 1, 2))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_img2img(run, truth):
    x = truth[:4]
    assert (img2img(run, x, strength=1e-3, steps=10, progress=False) - x).abs().max() < 1e-2
    a, b, c = (img2img(run, x, strength=0.5, steps=10, sampler="ddpm", seed=s, progress=False)
               for s in (3, 3, 4))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert a.shape == x.shape and a.abs().max() <= 1
    # A little noise changes the image a little; full strength, much more.
    near = img2img(run, x, strength=0.2, steps=10, progress=False)
    far = img2img(run, x, strength=1.0, steps=10, progress=False)
    assert (near - x).abs().mean() < (far - x).abs().mean()
    for sampler in ("euler", "dpmpp-2m"):
        assert img2img(run, x, strength=0.5, steps=6, sampler=sampler,
                       progress=False).shape == x.shape


def test_img2img_takes_the_samplers_own_options(run, truth):
    x = truth[:2]
    a, b = (img2img(run, x, strength=0.5, steps=6, sampler="ddim", eta=eta, progress=False)
            for eta in (0.0, 1.0))
    assert not torch.equal(a, b)  # η = 1 draws fresh noise at each step
    churned = img2img(run, x, strength=0.5, steps=6, sampler="euler", churn=2.0, progress=False)
    assert not torch.equal(churned, img2img(run, x, strength=0.5, steps=6, sampler="euler",
                                            progress=False))


def test_an_option_the_sampler_lacks_is_a_one_line_config_error(run, truth):
    with pytest.raises(ConfigError, match=r"^sampler 'ddim' has no option churn "
                                          r"\(its options: eta\)$"):
        img2img(run, truth[:1], sampler="ddim", churn=2.0)
    with pytest.raises(ConfigError, match=r"^sampler 'unipc' has no option eta"):
        sample(run, 2, sampler="unipc", eta=1.0)


def test_cli_sampler_option_it_lacks_is_one_line(run_dir, tmp_path, capsys):
    """`--churn` is euler's and heun's: for ddim it is an error naming ddim's options, and the
    recipe's eta, which only ddim takes, is no error for euler."""
    assert main(["sample", str(run_dir), "--n", "2", "--steps", "2", "--sampler", "ddim",
                 "--churn", "2", "--out", str(tmp_path / "a.png")]) == 1
    err = capsys.readouterr().err
    assert "sampler 'ddim' has no option churn (its options: eta)" in err
    assert err.count("\n") == 1 and not (tmp_path / "a.png").exists()
    assert main(["sample", str(run_dir), "--n", "2", "--steps", "2", "--sampler", "euler",
                 "--churn", "2", "--out", str(tmp_path / "b.png")]) == 0
    assert main(["sample", str(run_dir), "--n", "2", "--steps", "2", "--sampler", "ddpm",
                 "--no-noise", "--out", str(tmp_path / "c.png")]) == 0


def test_python_api_bad_inputs(run, truth):
    with pytest.raises(ConfigError, match=r"--strength must be in \(0, 1\], got 1.5"):
        img2img(run, truth[:1], strength=1.5)
    with pytest.raises(DataError, match="the mask is 32x32 but the image is 16x16"):
        inpaint(run, truth[:1], torch.ones(32, 32))
    with pytest.raises(DataError, match="the image has NaN or infinite values"):
        img2img(run, torch.full((1, 3, 16, 16), float("nan")))
    with pytest.raises(DataError, match="the image has 1 channels but the model"):
        inpaint(run, truth[:1, :1], left_half())
    with pytest.raises(ConfigError, match="--resample must be at least 1"):
        inpaint(run, truth[:1], left_half(), resample=0)


@pytest.fixture
def files(tmp_path, truth):
    """A 32 px RGB input (resized to the model's 16 px by the CLI) and its left-half mask."""
    pixels = ((truth[0] + 1) * 127.5).round().byte().permute(1, 2, 0).numpy()
    Image.fromarray(pixels).resize((32, 32), Image.NEAREST).save(tmp_path / "in.png")
    mask = np.zeros((32, 32), np.uint8)
    mask[:, :16] = 255
    Image.fromarray(mask).save(tmp_path / "mask.png")
    return tmp_path


def test_cli_end_to_end(run_dir, files, capsys):
    assert main(["inpaint", str(run_dir), "--image", str(files / "in.png"), "--mask",
                 str(files / "mask.png"), "--out", str(files / "filled.png"), "--steps", "5",
                 "--class", "1", "--guidance", "2", "--resample", "2"]) == 0
    assert f"wrote {files / 'filled.png'}" in capsys.readouterr().out
    filled = np.asarray(Image.open(files / "filled.png"))
    given = np.asarray(Image.open(files / "in.png"))  # the input's size comes back
    assert filled.shape == (32, 32, 3) and np.array_equal(filled[:, 16:], given[:, 16:])
    assert main(["img2img", str(run_dir), "--image", str(files / "in.png"), "--strength", "0.5",
                 "--sampler", "ddpm", "--steps", "6", "--out", str(files / "edit.png")]) == 0
    assert Image.open(files / "edit.png").size == (32, 32)


def test_images_keep_their_size(run, truth):
    """Any input size in, the same size out (issue 14); the model works at 16 px inside, and
    inpainting keeps every unmasked pixel of the input at its own size."""
    image = torch.nn.functional.interpolate(truth[:2], size=(20, 26), mode="bilinear")
    mask = torch.zeros(20, 26)
    mask[:, :9] = 1  # not a whole number of model pixels: the fill covers it all
    filled = inpaint(run, image, mask, steps=4, seed=1, progress=False)
    assert filled.shape == image.shape
    assert torch.equal(filled[..., 9:], image[..., 9:])
    assert not torch.equal(filled[..., :9], image[..., :9])
    edited = img2img(run, image, strength=0.5, steps=4, progress=False)
    assert edited.shape == image.shape and edited.abs().max() <= 1
    # a mask at the model's size is taken as covering the input's blocks
    assert inpaint(run, image, left_half(), steps=2, progress=False).shape == image.shape
    # at the model's own size nothing changes (see tests/test_golden.py)
    same = inpaint(run, truth[:1], left_half(), steps=3, seed=2, progress=False)
    assert same.shape == (1, 3, 16, 16)


def test_cli_keeps_a_large_input_s_size(run_dir, tmp_path):
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (200, 260, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(tmp_path / "big.png")
    mask = np.zeros((200, 260), np.uint8)
    mask[:, :130] = 255
    Image.fromarray(mask).save(tmp_path / "mask.png")
    assert main(["inpaint", str(run_dir), "--image", str(tmp_path / "big.png"), "--mask",
                 str(tmp_path / "mask.png"), "--steps", "3", "--out",
                 str(tmp_path / "f.png")]) == 0
    filled = np.asarray(Image.open(tmp_path / "f.png"))
    assert filled.shape == (200, 260, 3) and np.array_equal(filled[:, 130:], pixels[:, 130:])
    assert main(["img2img", str(run_dir), "--image", str(tmp_path / "big.png"), "--steps", "3",
                 "--out", str(tmp_path / "e.png")]) == 0
    assert Image.open(tmp_path / "e.png").size == (260, 200)


@pytest.mark.parametrize("args, message", [
    (["inpaint", "RUN", "--image", "none.png", "--mask", "mask.png", "--out", "o.png"],
     "image none.png not found"),
    (["img2img", "RUN", "--image", "broken.png", "--out", "o.png"], "broken.png is not a"),
    (["inpaint", "RUN", "--image", "in.png", "--mask", "small.png", "--out", "o.png"],
     "small.png is 8x8 but the image is 32x32: give a mask of the same size"),
    (["img2img", "RUN", "--image", "in.png", "--strength", "1.5", "--out", "o.png"],
     "--strength must be in (0, 1], got 1.5"),
    (["img2img", "RUN", "--image", "in.png", "--sampler", "nope", "--out", "o.png"],
     "unknown sampler 'nope'"),
    (["img2img", "RUN", "--image", "in.png", "--out", "o.jpg"], "use a file ending in .png"),
    (["img2img", "no/such/run", "--image", "in.png", "--out", "o.png"], "does not exist"),
])
def test_cli_bad_input_is_one_line(run_dir, files, args, message, capsys, monkeypatch):
    monkeypatch.chdir(files)
    (files / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 20)
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(files / "small.png")
    assert main([str(run_dir) if a == "RUN" else a for a in args]) == 1
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err
    assert not (files / "o.png").exists()
