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
    # the argument layer: suffixes and numbers, checked before any work
    (["sample", "no/such/run", "--out", "x.jpg"], "--out x.jpg: use a file ending in .png, .gif"),
    (["vae", "encode", "RUN", "--image", "a.png", "--out", "z.pt"], "ending in .safetensors"),
    (["clip", "similarity", "RUN", "--image", "a.png", "--text", "a", "--out", "h.jpg"],
     "use a file ending in .png"),
    (["sample", "RUN", "--n", "0", "--out", "x.png"], "--n must be at least 1, got 0"),
    (["sample", "RUN", "--steps", "2.5", "--out", "x.png"],
     "--steps expects an integer, got '2.5'"),
    (["sample", "RUN", "--guidance", "1,-2", "--out", "x.png"], "--guidance must be at least 0"),
    (["sample", "RUN", "--guidance", "1,x", "--out", "x.png"],
     "--guidance expects comma-separated numbers, got '1,x'"),
    (["sample", "RUN", "--rescale", "nan", "--out", "x.png"], "--rescale must be a finite number"),
    (["img2img", "RUN", "--image", "a.png", "--strength", "0", "--out", "o.png"],
     "--strength must be in (0, 1], got 0"),
    (["train", "shapes", "--max-minutes", "-1"], "--max-minutes must be at least 0, got -1"),
    (["vae", "train", "vae-fashion-mnist", "--recipe", "vae-shapes"], "give the recipe once"),
    (["vae", "train", "shapes"], "is a diffusion recipe: train it with `inkfuse train shapes`"),
    (["train", "clip-shapes"], "train it with `inkfuse clip train clip-shapes`"),
    (["clip", "train", "--set", "stepz=2"], "unknown key clip.stepz"),
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


def test_the_argument_layer_parses_once_for_every_command():
    from inkfuse.cli import build_parser
    from inkfuse.cli.args import overrides

    parse = build_parser().parse_args
    args = parse(["sample", "r", "--guidance", "0, 1,2.5", "--context", "1,0", "--out", "x.png"])
    assert args.guidance == [0.0, 1.0, 2.5] and args.context == [1.0, 0.0] and args.n == 16
    args = parse(["train", "shapes", "--set", "train.steps=5", "--max-minutes", "2"])
    assert overrides(args) == ["train.steps=5", "train.max_minutes=2.0"] and args.out is None
    for group in (["vae", "train"], ["clip", "train"]):  # the same grammar, a default recipe
        args = parse([*group, "--set", "train.steps=5", "--max-minutes", "2", "--quiet"])
        assert overrides(args) == ["train.steps=5", "train.max_minutes=2.0"] and args.quiet


def test_building_the_parser_imports_no_torch():
    code = ("import sys; from inkfuse.cli import build_parser; build_parser(); "
            "assert 'torch' not in sys.modules, 'torch imported'")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_help_names_the_samplers_and_metrics(capsys):
    for command in ("sample", "img2img", "eval"):
        with pytest.raises(SystemExit) as exit_:
            main([command, "--help"])
        assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert out.count("unipc") == 3 and "fd_cls" in out


TINY_VAE = ["data.size=16", "data.count=64", "vae.base_channels=8", "vae.groups=4",
            "vae.eval_count=16", "train.steps=2", "train.batch_size=8", "train.warmup_steps=0"]
TINY_CLIP = ["data.size=8", "data.count=64", "clip.eval_count=16", "clip.channels=[8]",
             "clip.width=16", "train.batch_size=16", "train.warmup_steps=0"]


def sets(overrides: list[str]) -> list[str]:
    return [a for o in overrides for a in ("--set", o)]


def test_vae_train_takes_a_recipe_like_train(tmp_path, capsys):
    out = tmp_path / "vae"
    assert main(["vae", "train", "vae-shapes", "--out", str(out), "--quiet",
                 *sets(TINY_VAE)]) == 0
    assert "held-out PSNR" in capsys.readouterr().out and (out / "vae.safetensors").is_file()
    # the README's old spelling still works: here it resumes the finished run
    assert main(["vae", "train", "--recipe", "vae-shapes", "--out", str(out), "--quiet",
                 *sets(TINY_VAE)]) == 0
    assert f"saved to {out}" in capsys.readouterr().out


def test_clip_train_takes_a_recipe_like_train(tmp_path, capsys):
    out = tmp_path / "clip"
    assert main(["clip", "train", "clip-shapes", "--out", str(out), "--quiet",
                 *sets([*TINY_CLIP, "train.steps=2"])]) == 0
    assert "text_to_image_r1" in capsys.readouterr().out
    assert main(["clip", "score", str(out)]) == 0
    assert (out / "score.json").is_file()


def test_clip_train_old_spellings_map_to_recipe_keys():
    from inkfuse.cli import build_parser
    from inkfuse.cli.args import overrides
    from inkfuse.cli.clip import _old_spellings

    args = build_parser().parse_args(["clip", "train", "--out", "runs/clip", "--steps", "800",
                                      "--size", "16", "--folder", "2024", "--set", "lr=5e-4",
                                      "--set", "clip.width=64", "--max-minutes", "1"])
    assert args.recipe == "clip-shapes"
    assert overrides(args, _old_spellings(args)) == [
        "train.lr=5e-4", "clip.width=64", "train.steps=800", "data.size=16",
        'data.name="folder"', 'data.path="2024"', "train.max_minutes=1.0"]


# --- issue 14: nothing lost, nothing silent ---------------------------------------------------
# Each bad input: exit 1, stderr one line `inkfuse: error: ...`, and nothing created in the
# working folder (no output, no parent folders of --out, no temporary files).

def refused(argv, capsys, cwd, message=""):
    """Run `argv` in the empty folder `cwd`; the one-line error, checking nothing was made."""
    before = sorted(cwd.rglob("*"))
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 1, err
    assert err.startswith("inkfuse: error: ") and err.count("\n") == 1, err
    assert message in err and "Traceback" not in err, err
    assert sorted(cwd.rglob("*")) == before, "something was created"
    return err


@pytest.fixture
def work(tmp_path, monkeypatch):
    """An empty working folder, and beside it `inputs/` with files the commands read."""
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    (inputs / "bad-utf8.txt").write_bytes(b"a red circle\n\xff\xfe oops\n")
    (inputs / "file").write_text("not a run")
    (inputs / "read-only.png").write_bytes(b"")
    (inputs / "read-only.png").chmod(0o444)
    cwd = tmp_path / "work"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    return cwd


# class 1: every numeric flag has a range, checked when parsing; None is "not given", never 0
@pytest.mark.parametrize("args, message", [
    (["sample", "RUN", "--steps", "0"], "--steps must be at least 1, got 0"),
    (["sample", "RUN", "--eta", "2"], "--eta must be in [0, 1], got 2"),
    (["sample", "RUN", "--eta", "-1"], "--eta must be in [0, 1], got -1"),
    (["sample", "RUN", "--churn", "-5", "--sampler", "euler"],
     "--churn must be at least 0, got -5"),
    (["sample", "RUN", "--seed", "-1"], "--seed must be at least 0, got -1"),
    (["sample", "RUN", "--seed", str(2**70)], "--seed must be at most 9223372036854775807"),
    (["sample", "RUN", "--n", str(10**9)], "--n must be at most 100000"),
    (["sample", "RUN", "--steps", "1000"], "must be between 1 and the model's T = 50"),
    (["eval", "RUN", "--steps", "0"], "--steps must be at least 1, got 0"),
    (["eval", "RUN", "--batch-size", "0"], "--batch-size must be at least 1, got 0"),
    (["viz", "forward", "shapes", "--n", "0"], "--n must be at least 1, got 0"),
    (["viz", "forward", "shapes", "--columns", "0"], "--columns must be at least 1, got 0"),
    (["clip", "train", "--steps", "0"], "--steps must be at least 1, got 0"),
    (["inpaint", "RUN", "--image", "a.png", "--mask", "m.png", "--resample", "0"],
     "--resample must be at least 1, got 0"),
    # class 4: non-finite numbers never get in
    (["sample", "RUN", "--context", "nan,0,0,0"], "--context must be a finite number, got nan"),
    (["sample", "RUN", "--guidance", "inf"], "--guidance must be a finite number, got inf"),
    (["sample", "RUN", "--guidance", "1e400"], "--guidance must be a finite number"),
    # class 7: prompts files are UTF-8
    (["sample", "RUN", "--prompts-file", "../inputs/bad-utf8.txt"],
     "--prompts-file ../inputs/bad-utf8.txt is not UTF-8 text (byte 13): save it as UTF-8"),
])
def test_numbers_out_of_range_are_refused(run_dir, work, capsys, args, message):
    argv = [str(run_dir) if a == "RUN" else a for a in args]
    refused([*argv, "--out", "new/dir/x.png"], capsys, work, message)


def test_every_numeric_flag_has_a_range():
    import argparse

    from inkfuse.cli.args import _Number, number

    with pytest.raises(TypeError, match="needs a range"):
        number(int)
    from inkfuse.cli import build_parser

    def parsers(p):
        yield p
        for action in p._actions:
            if isinstance(action, argparse._SubParsersAction):
                for sub in action.choices.values():
                    yield from parsers(sub)

    for p in parsers(build_parser()):
        for action in p._actions:
            assert action.type not in (int, float), f"{p.prog} {action.dest}: use number()"
            if isinstance(action, _Number):
                assert {action.lo, action.hi, action.most} != {None}, action.dest


def test_steps_given_are_the_steps_run(run_dir, work, monkeypatch):
    """`--steps` reaches the sampler as given (no `args.steps or default`)."""
    from inkfuse import pipelines

    seen = {}
    real = pipelines.sample
    monkeypatch.setattr(pipelines, "sample",
                        lambda *a, **k: seen.setdefault("steps", k["steps"]) and real(*a, **k))
    assert main(["sample", str(run_dir), "--n", "1", "--steps", "2", "--out", "x.png"]) == 0
    assert seen["steps"] == 2


# class 2: outputs checked before any work, nothing created on failure, argparse in one line
@pytest.mark.parametrize("argv, message", [
    (["sample", "RUN", "--class", "99", "--out", "new/dir/x.png"], "class id 99 is out of range"),
    (["sample", "RUN", "--out", "new/x.jpg"], "use a file ending in .png, .gif, .npz"),
    (["sample", "RUN", "--out", "../inputs"], "use a file ending in"),
    (["sample", "RUN", "--out", "../inputs/read-only.png"],
     "--out ../inputs/read-only.png exists and is read-only"),
    (["sample", "RUN", "--out", "../inputs/file/x.png"], "is a file, not a folder"),
    (["sample", "../inputs/file", "--out", "x.png"],
     "../inputs/file is a file, not a run dir"),
    (["sample", "RUN", "--upsample", "../inputs/file", "--out", "x.png"],
     "is a file, not a run dir"),
    (["train", "shapes", "--out", "../inputs/file"], "is a file, not a run dir"),
    (["eval", "../inputs/file"], "is a file, not a run dir"),
    (["sample", "RUN", "--bogus", "--out", "x.png"],
     "unrecognized arguments: --bogus (see `inkfuse sample --help`)"),
    (["sample", "RUN"], "the following arguments are required: --out (see `inkfuse sample"),
    (["viz", "nope", "shapes", "--out", "x.png"], "invalid choice: 'nope'"),
    (["smaple", "RUN"], "(see `inkfuse --help`)"),
    (["vae", "encode", "RUN", "--out", "z.safetensors"], "see `inkfuse vae encode --help`"),
])
def test_bad_outputs_and_usage_are_one_line(run_dir, work, capsys, argv, message):
    refused([str(run_dir) if a == "RUN" else a for a in argv], capsys, work, message)


def test_an_output_folder_is_refused_up_front(run_dir, work, capsys):
    (work / "d.png").mkdir()
    refused(["sample", str(run_dir), "--out", "d.png"], capsys, work, "--out d.png is a folder")


@pytest.mark.skipif(not hasattr(__import__("os"), "geteuid") or __import__("os").geteuid() == 0,
                    reason="root writes in read-only folders")
def test_a_read_only_folder_is_refused_up_front(run_dir, work, capsys):
    ro = work / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        refused(["sample", str(run_dir), "--out", "ro/x.png"], capsys, work, "cannot write in")
    finally:
        ro.chmod(0o755)


def test_file_system_errors_name_a_fix():
    import errno

    from inkfuse.cli.app import os_error_message

    msg = os_error_message(FileExistsError(errno.EEXIST, "File exists", "runs/x"))
    assert msg == "File exists (runs/x); remove it or choose another path"
    assert "free some disk space" in os_error_message(OSError(errno.ENOSPC, "No space", "f"))


# class 3: Ctrl-C and SIGTERM, with a message that fits the command
def test_interrupts_say_what_was_kept(run_dir, work, capsys, monkeypatch):
    import importlib
    import os
    import signal

    from inkfuse import pipelines

    def ctrl_c(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(pipelines, "sample", ctrl_c)
    assert main(["sample", str(run_dir), "--out", "x.png"]) == 130
    err = capsys.readouterr().err
    assert err == "inkfuse: interrupted; nothing was written\n"
    monkeypatch.setattr(pipelines, "sample",
                        lambda *a, **k: os.kill(os.getpid(), signal.SIGTERM))
    assert main(["sample", str(run_dir), "--out", "x.png"]) == 143
    assert capsys.readouterr().err == "inkfuse: terminated; nothing was written\n"
    monkeypatch.setattr(importlib.import_module("inkfuse.train"), "train",
                        lambda *a, **k: os.kill(os.getpid(), signal.SIGTERM))
    assert main(["train", "shapes", "--out", "r"]) == 143
    assert capsys.readouterr().err == ("inkfuse: terminated; it stopped before the first "
                                       "checkpoint, so nothing was kept\n")
    assert main(["train", "shapes", "--out", str(run_dir)]) == 143  # a run with a checkpoint
    assert capsys.readouterr().err == ("inkfuse: terminated; the last checkpoint is kept "
                                       "(run the same command to resume)\n")
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # restored after main
    assert list(work.iterdir()) == []


# class 4: a model that draws NaN stops with one line, writing nothing
def test_nan_weights_write_no_images(run_dir, work, capsys):
    import shutil

    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    bad = work.parent / "nan-run"
    shutil.copytree(run_dir, bad)
    for name in ("ema", "model"):
        path = bad / "checkpoint" / f"{name}.safetensors"
        with safe_open(path, "pt") as f:
            meta = f.metadata()
        tensors = {k: v.fill_(float("nan")) if v.is_floating_point() else v
                   for k, v in load_file(path).items()}
        save_file(tensors, path, metadata=meta)
    for out in ("x.png", "x.npz", "x.gif"):
        refused(["sample", str(bad), "--n", "2", "--out", out], capsys, work,
                "produced NaN or infinite values and nothing was written")


def test_prompt_weights_must_be_finite():
    from inkfuse.errors import ConfigError
    from inkfuse.pipelines import parse_mix

    for prompt in ("a :nan | b", "a :inf | b", "a :-inf", "a :1e400 | b :1"):
        with pytest.raises(ConfigError, match="finite"):
            parse_mix(prompt)
