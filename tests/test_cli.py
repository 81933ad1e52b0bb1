"""Every CLI command end to end on a tiny run, and every bad input as one line + exit 1."""

import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from inkfuse.cli import main


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, tiny_overrides):
    out = tmp_path_factory.mktemp("cli") / "run"
    sets = [a for o in tiny_overrides for a in ("--set", o)]
    assert main(["train", "shapes", "--out", str(out), "--quiet", *sets]) == 0
    return out


def test_sample_png_gif_npz(run_dir, tmp_path):
    assert main(["sample", str(run_dir), "--n", "8", "--steps", "3", "--out",
                 str(tmp_path / "g.png")]) == 0
    assert Image.open(tmp_path / "g.png").size[0] >= 64
    assert main(["sample", str(run_dir), "--n", "4", "--steps", "3", "--class", "2",
                 "--guidance", "4", "--rescale", "0.7", "--out", str(tmp_path / "a.gif")]) == 0
    assert Image.open(tmp_path / "a.gif").n_frames >= 2
    assert main(["sample", str(run_dir), "--n", "6", "--sampler", "ddpm", "--steps", "4",
                 "--out", str(tmp_path / "s.npz")]) == 0
    z = np.load(tmp_path / "s.npz")
    assert z["images"].shape == (6, 16, 16, 3) and z["images"].dtype == np.uint8
    assert z["labels"].dtype == np.int64 and z["labels"].tolist() == [0, 1, 2, 3, 0, 1]


def test_same_seed_same_images(run_dir, tmp_path):
    for name, seed in [("a", 1), ("b", 1), ("c", 2)]:
        main(["sample", str(run_dir), "--n", "4", "--steps", "3", "--seed", str(seed), "--eta",
              "1", "--out", str(tmp_path / f"{name}.npz")])
    a, b, c = (np.load(tmp_path / f"{n}.npz")["images"] for n in "abc")
    assert np.array_equal(a, b) and not np.array_equal(a, c)


def test_viz_and_data_commands(run_dir, tmp_path, capsys):
    assert main(["viz", "schedule", "ddpm-course", "--out", str(tmp_path / "s.png")]) == 0
    assert main(["viz", "forward", str(run_dir), "--out", str(tmp_path / "f.png")]) == 0
    assert main(["viz", "forward", "shapes", "--out", str(tmp_path / "f.gif")]) == 0
    assert main(["data", "list"]) == 0
    assert "fashion-mnist" in capsys.readouterr().out
    assert main(["data", "fetch", "mnist"]) == 0  # already in INKFUSE_DATA: verified, not fetched


@pytest.mark.parametrize("args, message", [
    (["sample", "no/such/run", "--out", "x.png"], "run dir no/such/run does not exist"),
    (["train", "shapes", "--set", "train.stepz=1"], "unknown key train.stepz"),
    (["train", "shapes", "--set", "train.lr=-2"], "train.lr = -2.0 is out of range"),
    (["train", "no-such-recipe"], "recipe 'no-such-recipe' not found"),
    (["viz", "forward", "shapes", "--out", "x.jpg"], "use a file ending in .png, .gif"),
    (["train", "shapes", "--set", "data.name=folder"], "needs data.path"),
])
def test_bad_input_is_one_line(args, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(args) == 1
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err


def test_damaged_runs_are_one_line(run_dir, tmp_path, capsys):
    import shutil

    bad = tmp_path / "bad"
    shutil.copytree(run_dir, bad)
    assert main(["sample", str(run_dir), "--class", "99", "--out", str(tmp_path / "x.png")]) == 1
    assert "class id 99 is out of range" in capsys.readouterr().err
    assert main(["sample", str(run_dir), "--rescale", "2", "--out", str(tmp_path / "x.png")]) == 1
    assert "--rescale must be in [0, 1]" in capsys.readouterr().err
    ema = bad / "checkpoint" / "ema.safetensors"
    ema.write_bytes(ema.read_bytes()[:200])
    assert main(["sample", str(bad), "--out", str(tmp_path / "x.png")]) == 1
    assert "truncated or corrupt" in capsys.readouterr().err
    (bad / "config.json").write_text("{not json")
    assert main(["sample", str(bad), "--out", str(tmp_path / "x.png")]) == 1
    assert "config.json is damaged" in capsys.readouterr().err
    assert not (tmp_path / "x.png").exists()


def test_console_script_prints_no_traceback(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "inkfuse.cli", "sample", str(tmp_path / "none"),
                           "--out", "x.png"], capture_output=True, text=True)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert proc.stderr.startswith("inkfuse: error: run dir")
