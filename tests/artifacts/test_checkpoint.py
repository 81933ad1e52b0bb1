"""Checkpoints and the other files of a run dir: every damaged, altered or foreign file is one
CheckpointError line (JSON structure, tensor shapes and dtypes), a failed write keeps the last
checkpoint, and temp files have unique names and never follow a symlink."""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import struct
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from inkfuse.artifacts import checkpoint, load_run
from inkfuse.artifacts.log import LOG, read_log, truncate_log
from inkfuse.cli import main
from inkfuse.errors import CheckpointError
from inkfuse.io import atomic_path, write_new


def test_optimizer_state_round_trips(tmp_path):
    net = torch.nn.Linear(3, 2)
    opt = torch.optim.AdamW(net.parameters())
    net(torch.randn(4, 3)).sum().backward()
    opt.step()
    tensors, rest = checkpoint.optimizer_tensors(opt.state_dict())
    checkpoint.save_tensors(tmp_path / "t.safetensors", tensors)
    restored = checkpoint.optimizer_state(checkpoint.load_tensors(tmp_path / "t.safetensors"), rest)
    opt2 = torch.optim.AdamW(net.parameters())
    opt2.load_state_dict(restored)
    for k, v in opt.state_dict()["state"][0].items():
        assert torch.equal(v, opt2.state_dict()["state"][0][k])


def test_damaged_and_foreign_files_are_refused(tmp_path):
    good = tmp_path / "good.safetensors"
    checkpoint.save_tensors(good, {"w": torch.ones(100)})
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(good.read_bytes()[:-50])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        checkpoint.load_tensors(cut)
    foreign = tmp_path / "foreign.safetensors"
    save_file({"w": torch.ones(2)}, str(foreign))
    with pytest.raises(CheckpointError, match="not written by inkfuse"):
        checkpoint.load_tensors(foreign)
    pickle = tmp_path / "model.safetensors"
    torch.save({"w": torch.ones(2)}, pickle)
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        checkpoint.load_tensors(pickle)
    with pytest.raises(CheckpointError, match="is missing"):
        checkpoint.load_tensors(tmp_path / "nope.safetensors")


def test_weights_of_another_model_get_one_line_naming_the_tensor(tmp_path):
    expected = torch.nn.Linear(3, 2).state_dict()
    path = tmp_path / "run"
    with pytest.raises(CheckpointError, match=r"run lacks tensor bias: .*different model than "
                                              r"its config; train it again"):
        checkpoint.check_weights({"weight": torch.ones(2, 3)}, expected, path, "its config",
                                 fix="train it again")
    with pytest.raises(CheckpointError, match="has an unexpected tensor extra"):
        checkpoint.check_weights({**expected, "extra": torch.ones(1)}, expected, path, "it")
    with pytest.raises(CheckpointError, match=r"weight is \[3, 3\] but it has \[2, 3\]"):
        checkpoint.check_weights({**expected, "weight": torch.ones(3, 3)}, expected, path, "it")
    checkpoint.check_weights(dict(expected), expected, path, "it")  # a fitting one passes


# ----------------------------------------------------------------------------- helpers

OLD_RUNS = Path(__file__).parents[1] / "fixtures" / "old-runs"


def copy_run(tmp_path: Path, name: str = "class") -> Path:
    run = tmp_path / name
    shutil.copytree(OLD_RUNS / name, run)
    return run


def one_error_line(capsys: pytest.CaptureFixture, *argv: str) -> str:
    """Run the CLI; it must fail with exit 1 and print exactly one `inkfuse: error:` line."""
    capsys.readouterr()
    assert main(list(argv)) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("inkfuse: error:") and "\n" not in err, err
    assert "Traceback" not in err
    return err


def sample(capsys: pytest.CaptureFixture, run: Path, out: Path) -> str:
    err = one_error_line(capsys, "sample", str(run), "--n", "1", "--steps", "2", "--out",
                         str(out))
    assert not out.exists()  # nothing written
    return err


def edit_json(path: Path, change: Callable[[Any], Any]) -> None:
    value = json.loads(path.read_text())
    path.write_text(json.dumps(change(value)))


def set_key(key: str, value: Any) -> Callable[[dict], dict]:
    return lambda d: {**d, key: value}


def retype_header(path: Path, old: str = "F32", new: str = "I32") -> None:
    """Change the dtype of the first tensor in a safetensors header (same size, so the file
    still parses): what a bit flip or a hostile edit does."""
    data = bytearray(path.read_bytes())
    n = struct.unpack("<Q", data[:8])[0]
    header = bytes(data[8 : 8 + n]).replace(f'"{old}"'.encode(), f'"{new}"'.encode(), 1)
    assert len(header) == n
    data[8 : 8 + n] = header
    path.write_bytes(bytes(data))


# ----------------------------------------------------------------------------- 1. JSON structure

@pytest.mark.parametrize(("file", "change", "message"), [
    ("config.json", set_key("dataset", []), "config.json is damaged: dataset is a list"),
    ("config.json", set_key("model", "unet"), "config.json is damaged: model is a string"),
    ("config.json", lambda d: [d], "config.json is damaged: the file is a list, not a table"),
    ("config.json", lambda d: {**d, "dataset": {**d["dataset"], "prompts": [1]}},
     r"dataset\.prompts\[0\] is an integer, not a string"),
    ("checkpoint/state.json", set_key("step", "abc"), "step is a string \\('abc'\\), not an int"),
    ("checkpoint/state.json", set_key("step", True), "step is true/false"),
    ("checkpoint/state.json", lambda d: [], "state.json is damaged: the file is a list"),
    ("checkpoint/state.json", lambda d: 3, "state.json is damaged: the file is an integer"),
    ("checkpoint/state.json", lambda d: {"optimizer": {}}, "lacks .step."),
    ("checkpoint/state.json", set_key("optimizer", {"scalars": {}}),
     "lacks .optimizer.param_groups."),
])
def test_damaged_run_json_is_one_line(tmp_path, capsys, file, change, message):
    run = copy_run(tmp_path)
    edit_json(run / file, change)
    err = sample(capsys, run, tmp_path / "x.png")
    assert re.search(message, err), err
    assert "restore it from a copy or train again" in err


@pytest.mark.parametrize(("run_name", "file", "change", "message"), [
    ("latent", "vae/vae.json", set_key("model", []), "vae.json is damaged: model is a list"),
    ("latent", "vae/vae.json", set_key("image_size", "abc"), "image_size is a string"),
    ("latent", "vae/vae.json", lambda d: {k: v for k, v in d.items() if k != "image_size"},
     "lacks 'image_size'"),
    ("text", "clip/clip.json", set_key("tokenizer", []), "clip.json is damaged: tokenizer is"),
    ("text", "clip/clip.json", set_key("train", "x"), "clip.json is damaged: train is a string"),
    ("text", "clip/clip.json", lambda d: None, "the file is null, not a table"),
])
def test_damaged_vae_and_clip_json_is_one_line(tmp_path, capsys, run_name, file, change,
                                               message):
    run = copy_run(tmp_path, run_name)
    edit_json(run / file, change)
    assert re.search(message, sample(capsys, run, tmp_path / "x.png"))


def test_a_damaged_log_line_is_one_error_but_a_cut_last_line_is_skipped(tmp_path):
    log = tmp_path / LOG
    log.write_text('{"step": 1, "loss": 0.5}\n{"step": 2, "lo')  # a kill mid-write
    assert [r["step"] for r in read_log(log)] == [1]
    truncate_log(log, 1)
    assert log.read_text() == '{"step": 1, "loss": 0.5}\n'
    log.write_text('{"step": 1}\nnot json\n{"step": 2}\n')
    before = log.read_text()
    with pytest.raises(CheckpointError, match=r"log.jsonl line 2 is not JSON \('not json'\); "
                                              "delete that line"):
        truncate_log(log, 1)
    assert log.read_text() == before  # nothing changed
    log.write_text('{"step": 1}\n[1, 2]\n')
    with pytest.raises(CheckpointError, match=r"line 2 is not a log record with an integer"):
        read_log(log)
    log.write_text('{"step": "3"}\n')
    with pytest.raises(CheckpointError, match=r"line 1 is not a log record"):
        read_log(log)


def test_runs_of_earlier_versions_still_pass_the_checks():
    for name in ("class", "latent", "text"):
        run = load_run(OLD_RUNS / name)
        assert run.net is not None
        checkpoint.read_json(OLD_RUNS / name / "checkpoint" / "state.json")


# ----------------------------------------------------------------------------- 2. dtypes

def test_a_retyped_tensor_is_refused_naming_it(tmp_path, capsys):
    run = copy_run(tmp_path)
    retype_header(run / "checkpoint" / "ema.safetensors")
    err = sample(capsys, run, tmp_path / "x.png")
    assert re.search(r"ema\.safetensors: cond_embed\.bias is int32 but its config\.json has "
                     r"float32: the file was altered", err), err


@pytest.mark.parametrize(("run_name", "file"), [("latent", "vae/vae.safetensors"),
                                                ("text", "clip/clip.safetensors")])
def test_a_retyped_vae_or_clip_tensor_is_refused(tmp_path, capsys, run_name, file):
    run = copy_run(tmp_path, run_name)
    retype_header(run / file)
    err = sample(capsys, run, tmp_path / "x.png")
    assert re.search(rf"{Path(file).name}: \S+ is int32 but (vae|clip)\.json has float32", err)


def test_check_weights_compares_dtypes(tmp_path):
    expected = {"w": torch.ones(2), "n": torch.zeros((), dtype=torch.int64)}
    with pytest.raises(CheckpointError, match=r"w is int32 but it has float32"):
        checkpoint.check_weights({**expected, "w": torch.ones(2, dtype=torch.int32)}, expected,
                                 tmp_path, "it")
    half = {**expected, "w": torch.ones(2, dtype=torch.float16)}
    with pytest.raises(CheckpointError, match=r"w is float16 but it has float32"):
        checkpoint.check_weights(half, expected, tmp_path, "it")
    checkpoint.check_weights(half, expected, tmp_path, "it", cast_floats=True)  # foreign fp16
    with pytest.raises(CheckpointError, match=r"n is float32 but it has int64"):
        checkpoint.check_weights({**expected, "n": torch.zeros(())}, expected, tmp_path, "it",
                                 cast_floats=True)


def _trained_optimizer() -> tuple[torch.nn.Linear, torch.optim.AdamW]:
    net = torch.nn.Linear(3, 2)
    opt = torch.optim.AdamW(net.parameters())
    net(torch.randn(4, 3)).sum().backward()
    opt.step()
    return net, opt


def test_optimizer_state_is_checked_against_the_parameters(tmp_path):
    net, opt = _trained_optimizer()
    tensors, rest = checkpoint.optimizer_tensors(opt.state_dict())
    ckpt = tmp_path / "checkpoint"
    ckpt.mkdir()
    checkpoint.save_tensors(ckpt / "trainer.safetensors", tensors)
    state = {"step": 1, "optimizer": rest}
    fresh = torch.optim.AdamW(net.parameters())
    fresh.load_state_dict(checkpoint.load_optimizer(ckpt, state, fresh))
    assert torch.equal(fresh.state_dict()["state"][0]["exp_avg"],
                       opt.state_dict()["state"][0]["exp_avg"])
    path = ckpt / "trainer.safetensors"
    retype_header(path)
    with pytest.raises(CheckpointError, match=r"trainer\.safetensors: optim\.0\.exp_avg is int32 "
                                              r"but should be float32: the file was altered"):
        checkpoint.load_optimizer(ckpt, state, fresh)
    for bad, message in (({"optim.0.exp_avg": torch.ones(5)}, r"is \[5\] but its parameter "
                                                               r"has \[2, 3\]"),
                         ({"optim.7.exp_avg": torch.ones(1)}, "parameter 7, but the model has 2"),
                         ({"optim.0.step": torch.ones((), dtype=torch.int64)}, "int64 but "
                                                                             "should be float32"),
                         ({"weights": torch.ones(1)}, "not AdamW's state")):
        with pytest.raises(CheckpointError, match=message):
            checkpoint.check_optimizer(bad, net.parameters(), path)


# ----------------------------------------------------------------------------- 3. write errors

def _tiny_checkpoint(run: Path, step: int) -> None:
    net, opt = _trained_optimizer()
    tensors, rest = checkpoint.optimizer_tensors(opt.state_dict())
    weights = {k: v + step for k, v in net.state_dict().items()}
    checkpoint.save(run, weights, weights, tensors, {"step": step, "optimizer": rest})


def _fails_half_way(error: BaseException) -> Callable[..., None]:
    real = checkpoint.save_file

    def save_file(tensors: dict, path: str, metadata: dict | None = None) -> None:
        real(tensors, path, metadata=metadata)
        data = Path(path).read_bytes()
        Path(path).write_bytes(data[: len(data) // 2])  # half of it reached the disk
        raise error

    return save_file


@pytest.mark.parametrize("error", [
    OSError(errno.ENOSPC, "No space left on device"),
    SafetensorError('Error while serializing: IoError(Os { code: 28, kind: StorageFull, '
                    'message: "No space left on device" })'),
])
def test_a_full_disk_keeps_the_previous_checkpoint(tmp_path, monkeypatch, error):
    run = tmp_path / "run"
    _tiny_checkpoint(run, 1)
    before = {p.name: p.read_bytes() for p in (run / "checkpoint").iterdir()}
    monkeypatch.setattr(checkpoint, "save_file", _fails_half_way(error))
    with pytest.raises(CheckpointError) as e:
        _tiny_checkpoint(run, 2)
    text = str(e.value)
    assert text.startswith(f"no space left on device writing {run}{os.sep}checkpoint.tmp-")
    assert text.endswith("free space and run the same command to resume from the last "
                         "checkpoint") and "\n" not in text
    assert sorted(p.name for p in run.iterdir()) == ["checkpoint"]  # no temp folder left
    assert {p.name: p.read_bytes() for p in (run / "checkpoint").iterdir()} == before
    assert checkpoint.read_json(run / "checkpoint" / "state.json")["step"] == 1
    assert torch.equal(checkpoint.load_weights(run)["bias"],
                       load_file(str(run / "checkpoint" / "ema.safetensors"))["bias"])
    monkeypatch.undo()
    _tiny_checkpoint(run, 2)  # space freed: the next save works
    assert checkpoint.read_json(run / "checkpoint" / "state.json")["step"] == 2


def test_other_write_errors_name_the_cause(tmp_path, monkeypatch):
    monkeypatch.setattr(checkpoint, "save_file",
                        _fails_half_way(OSError(errno.EACCES, "Permission denied")))
    with pytest.raises(CheckpointError, match=r"cannot write .*model\.safetensors \(Permission "
                                              r"denied\); fix that and run the same command"):
        checkpoint.save_tensors(tmp_path / "model.safetensors", {"w": torch.ones(2)})
    assert list(tmp_path.iterdir()) == []  # no temp file left


@pytest.fixture
def small_tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A 64 KiB tmpfs, where root may mount one; else the test is skipped."""
    mount = tmp_path / "tmpfs"
    mount.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a tmpfs needs root")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount)],
                          capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.decode().strip()})")
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=False)


@pytest.mark.slow
def test_a_really_full_disk(small_tmpfs):
    run = small_tmpfs / "run"
    _tiny_checkpoint(run, 1)
    before = {p.name: p.read_bytes() for p in (run / "checkpoint").iterdir()}
    _, opt = _trained_optimizer()
    big = {"w": torch.zeros(16_384)}  # 64 KiB: cannot fit beside the first checkpoint
    tensors, rest = checkpoint.optimizer_tensors(opt.state_dict())
    with pytest.raises(CheckpointError, match=r"no space left on device writing .*free space"):
        checkpoint.save(run, big, big, tensors, {"step": 2, "optimizer": rest})
    assert sorted(p.name for p in run.iterdir()) == ["checkpoint"]
    assert {p.name: p.read_bytes() for p in (run / "checkpoint").iterdir()} == before


# ----------------------------------------------------------------------------- 4. temp files

def test_temp_names_are_unique_and_never_follow_a_symlink(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    target = tmp_path / "victim"
    target.mkdir()
    (run / "checkpoint.tmp").symlink_to(target)  # planted at the old fixed name
    (target / "keep").write_text("mine")
    _tiny_checkpoint(run, 1)
    assert (target / "keep").read_text() == "mine" and sorted(os.listdir(target)) == ["keep"]
    assert sorted(p.name for p in run.iterdir()) == ["checkpoint"]  # the symlink is removed
    # write_json: a symlink at the old fixed temp name is neither followed nor replaced
    victim = tmp_path / "victim.json"
    victim.write_text("{}")
    (run / ".state.json.tmp").symlink_to(victim)
    checkpoint.write_json(run / "state.json", {"a": 1})
    assert victim.read_text() == "{}" and json.loads((run / "state.json").read_text()) == {"a": 1}
    with pytest.raises(FileExistsError):
        write_new(run / ".state.json.tmp", b"x")  # exclusive, never through a symlink
    assert victim.read_text() == "{}"


def test_atomic_path_refuses_a_symlink_put_in_its_place(tmp_path):
    victim = tmp_path / "victim"
    victim.write_text("secret")
    dest = tmp_path / "out.json"
    with pytest.raises(OSError), atomic_path(dest) as tmp:
        tmp.symlink_to(victim)
    assert not dest.exists() and victim.read_text() == "secret"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["victim"]


def test_leftovers_of_a_crash_are_never_a_checkpoint(tmp_path):
    run = tmp_path / "run"
    _tiny_checkpoint(run, 1)
    crashed = run / "checkpoint.tmp-deadbeef"  # a crash mid-write, with a state.json in it
    shutil.copytree(run / "checkpoint", crashed)
    (run / "checkpoint.tmp").mkdir()  # what an older version left
    assert checkpoint.find(run) == run / "checkpoint"
    assert checkpoint.leftovers(run) == [run / "checkpoint.tmp", crashed]
    shutil.rmtree(run / "checkpoint")
    assert checkpoint.find(run) is None  # a temp folder is no checkpoint
    _tiny_checkpoint(run, 2)
    assert sorted(p.name for p in run.iterdir()) == ["checkpoint"]
    assert checkpoint.read_json(checkpoint.find(run) / "state.json")["step"] == 2


def test_checkpoint_old_is_the_fallback(tmp_path):
    run = tmp_path / "run"
    _tiny_checkpoint(run, 1)
    os.replace(run / "checkpoint", run / "checkpoint.old")  # a crash between the two renames
    assert checkpoint.find(run) == run / "checkpoint.old"
    _tiny_checkpoint(run, 2)
    assert sorted(p.name for p in run.iterdir()) == ["checkpoint"]


def test_two_writers_never_share_a_temp_name(tmp_path):
    names = set()
    for _ in range(20):
        with atomic_path(tmp_path / "a.json") as tmp:
            names.add(tmp.name)
            write_new(tmp, b"{}")
    assert len(names) == 20
