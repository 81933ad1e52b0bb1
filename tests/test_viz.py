"""viz and io: pixel-exact grids, uint8 conversion, GIF frames, valid plot files, atomic writes."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from inkfuse import viz
from inkfuse.errors import DataError, InkfuseError
from inkfuse.io import atomic_path


def images(n: int, c: int, size: int = 4, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, c, size, size, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def test_to_uint8_ends_midpoint_clamp_and_layout():
    x = torch.tensor([-1.0, 1.0, 0.0, -5.0, 5.0, float("nan")]).view(1, 1, 1, 6)
    # 0 -> 127.5 -> 128: torch.round rounds half to even; NaN renders as mid-gray
    assert viz.to_uint8(x)[0, 0, :, 0].tolist() == [0, 255, 128, 0, 255, 128]
    u = viz.to_uint8(images(2, 3, 5).to(torch.bfloat16))
    assert u.shape == (2, 5, 5, 3) and u.dtype == np.uint8


def test_to_uint8_round_trips_uint8_images():
    k = torch.arange(256, dtype=torch.float32)
    assert viz.to_uint8((k / 127.5 - 1).view(1, 1, 16, 16)).ravel().tolist() == list(range(256))


def test_to_uint8_rejects_bad_shapes():
    with pytest.raises(ValueError, match="C = 1 or 3"):
        viz.to_uint8(torch.zeros(1, 2, 4, 4))


@pytest.mark.parametrize("c", [1, 3])
def test_make_grid_size_padding_and_placement(c):
    x = images(5, c)  # 5 images of 4x4, 3 per row -> 2 rows, last row has an empty cell
    g = viz.make_grid(x, nrow=3, padding=2, pad_value=-1.0)
    assert g.shape == (2 * 6 + 2, 3 * 6 + 2, c) and g.dtype == np.uint8
    u = viz.to_uint8(x)
    assert np.array_equal(g[2:6, 8:12], u[1])  # row 0, column 1
    assert np.array_equal(g[8:12, 2:6], u[3])  # row 1, column 0
    mask = np.ones(g.shape[:2], bool)
    for i in range(5):
        r, k = divmod(i, 3)
        mask[2 + 6 * r:6 + 6 * r, 2 + 6 * k:6 + 6 * k] = False
    assert (g[mask] == 0).all()  # padding and the empty cell carry pad_value (-1 -> 0)


def test_make_grid_fewer_images_than_nrow():
    assert viz.make_grid(images(2, 1), nrow=8, padding=1).shape == (6, 11, 1)


@pytest.mark.parametrize(("c", "mode"), [(1, "L"), (3, "RGB")])
def test_save_grid_auto_scale_and_mode(tmp_path, c, mode):
    x = images(4, c, size=16)
    g = viz.make_grid(x, nrow=4)  # 18 x 74
    viz.save_grid(x, tmp_path / "g.png", nrow=4)
    with Image.open(tmp_path / "g.png") as im:
        assert im.format == "PNG" and im.mode == mode
        assert im.width >= 256 and im.width % g.shape[1] == 0
        s = im.width // g.shape[1]
        assert im.size == (g.shape[1] * s, g.shape[0] * s)
        assert np.array_equal(np.asarray(im)[::s, ::s].reshape(g.shape), g)  # nearest neighbour
    viz.save_grid(x, tmp_path / "s1.png", nrow=2, scale=1)
    assert Image.open(tmp_path / "s1.png").size == (38, 38)


def test_save_grid_row_labels(tmp_path):
    x = images(6, 3, size=8)
    viz.save_grid(x, tmp_path / "plain.png", nrow=3, scale=4)
    viz.save_grid(x, tmp_path / "lab.png", nrow=3, scale=4, labels=["circle", "square"])
    plain, lab = Image.open(tmp_path / "plain.png"), Image.open(tmp_path / "lab.png")
    assert lab.height == plain.height and lab.width > plain.width
    with pytest.raises(ValueError, match="3 labels for a grid of 2 rows"):
        viz.save_grid(x, tmp_path / "bad.png", nrow=3, labels=["a", "b", "c"])
    assert not (tmp_path / "bad.png").exists()


@pytest.mark.parametrize("c", [1, 3])
def test_save_gif_frames_and_hold(tmp_path, c):
    frames = [images(4, c, size=8, seed=i) for i in range(5)]
    viz.save_gif(frames, tmp_path / "rev.gif", nrow=2, fps=10, hold_last=1.0)
    with Image.open(tmp_path / "rev.gif") as im:
        assert im.format == "GIF" and im.n_frames == 5 and im.width >= 256
        durations = []
        for i in range(im.n_frames):
            im.seek(i)
            durations.append(im.info["duration"])
    assert durations == [100] * 4 + [1000]


def test_forward_strip_png_and_gif(tmp_path):
    x0 = images(3, 1, size=8)
    noisy = [images(3, 1, size=8, seed=s) for s in (1, 2, 3)]
    viz.save_forward_strip(x0, noisy, ["t=10", "t=100", "t=999"], tmp_path / "f.png", scale=4)
    grid = viz.make_grid(torch.zeros(12, 1, 8, 8), nrow=4)
    with Image.open(tmp_path / "f.png") as im:  # labels add a margin above, never at the side
        assert im.width == grid.shape[1] * 4 and im.height > grid.shape[0] * 4
    viz.save_forward_strip(x0, noisy, ["x0", "t=10", "t=100", "t=999"], tmp_path / "f.gif")
    with Image.open(tmp_path / "f.gif") as im:
        assert im.n_frames == 4
    with pytest.raises(ValueError, match="labels"):
        viz.save_forward_strip(x0, noisy, ["t=10"], tmp_path / "bad.png")


def assert_png(path):
    with Image.open(path) as im:
        assert im.format == "PNG" and im.width > 100 and im.height > 100
        im.verify()


def test_plot_loss_from_jsonl_and_records(tmp_path):
    log = tmp_path / "log.jsonl"
    lines = [json.dumps({"step": s, "loss": 1 / (s + 1), "lr": 1e-3 * min(1, s / 10)})
             for s in range(50)]
    lines.insert(5, json.dumps({"step": 4, "eval_fid": 12.0}))  # ignored: no loss
    log.write_text("\n".join(lines) + '\n{"step": 50, "lo')  # crash mid-write
    viz.plot_loss(log, tmp_path / "loss.png")
    assert_png(tmp_path / "loss.png")
    records = [{"step": s, "loss": 2.0 - s / 100, "ema_loss": 2.0} for s in range(20)]
    viz.plot_loss(records, tmp_path / "loss2.png")
    assert_png(tmp_path / "loss2.png")
    with pytest.raises(DataError, match="no records"):
        viz.plot_loss([{"step": 1}], tmp_path / "none.png")
    log.write_text('{"step": 1, "loss": 1}\nnot json\n{"step": 2, "loss": 1}\n')
    with pytest.raises(DataError, match=":2: not valid JSON"):
        viz.plot_loss(log, tmp_path / "bad.png")


def test_plot_schedule_lines_heatmap(tmp_path):
    t = np.arange(1000)
    lin = np.cumprod(1 - np.linspace(1e-4, 0.02, 1000))
    cos = np.cos((t / 1000 + 0.008) / 1.008 * np.pi / 2) ** 2
    cos[-1] = 0.0  # SNR 0 at the end: log SNR = -inf must not break the plot
    curves = {name: {"t": t, "alphas_cumprod": ab, "snr": ab / (1 - ab)}
              for name, ab in [("linear", lin), ("cosine", cos)]}
    viz.plot_schedule(curves, tmp_path / "sched.png")
    viz.plot_lines({"ddim": ([5, 10, 50], [40.0, 20.0, 8.0]), "ddpm": ([50, 1000], [30.0, 6.0])},
                   tmp_path / "lines.png", "steps", "FID", "quality vs steps", logx=True)
    sim = np.array([[0.31, 0.12], [0.08, 0.29], [0.1, 0.2]])
    viz.plot_heatmap(sim, ["img0", "img1", "img2"], ["a cat", "a dog"], tmp_path / "hm.png",
                     "cosine similarity")
    for name in ("sched.png", "lines.png", "hm.png"):
        assert_png(tmp_path / name)
    with pytest.raises(ValueError, match="does not match"):
        viz.plot_heatmap(sim, ["a"], ["b"], tmp_path / "bad.png", "x")


def test_plots_need_matplotlib(tmp_path, monkeypatch):
    for mod in ("matplotlib", "matplotlib.figure", "matplotlib.backends.backend_agg"):
        monkeypatch.setitem(sys.modules, mod, None)  # makes `import` raise ImportError
    with pytest.raises(InkfuseError, match=r"pip install 'inkfuse\[plot\]'"):
        viz.plot_lines({}, tmp_path / "x.png", "x", "y", "t")


def test_atomic_path_replaces_on_success(tmp_path):
    dest = tmp_path / "ckpt.bin"
    dest.write_bytes(b"old")
    with atomic_path(dest) as tmp:
        assert tmp.parent == tmp_path and tmp.suffix == ".bin" and not tmp.exists()
        tmp.write_bytes(b"new")
    assert dest.read_bytes() == b"new"
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt.bin"]


def test_atomic_path_failure_keeps_destination_and_cleans_up(tmp_path):
    dest = tmp_path / "ckpt.bin"
    dest.write_bytes(b"old")
    with pytest.raises(RuntimeError, match="disk full"), atomic_path(dest) as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("disk full")
    assert dest.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt.bin"]
    with pytest.raises(FileNotFoundError), atomic_path(dest):
        pass  # a writer that wrote nothing must not replace the destination either
    assert dest.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt.bin"]


def test_atomic_path_creates_parent_dirs(tmp_path):
    viz.save_grid(images(1, 1), tmp_path / "run" / "samples" / "step_1.png", nrow=1)
    assert (tmp_path / "run" / "samples" / "step_1.png").exists()


def test_the_upsampling_lesson_and_its_comparison_of_two_runs(tmp_path):
    viz.plot_upsampling(tmp_path / "up.png")
    assert Image.open(tmp_path / "up.png").size[0] > 800
    runs = Path(__file__).resolve().parent / "fixtures" / "old-runs"
    cmd = [sys.executable, "-m", "inkfuse.cli", "viz", "upsample", "--out",
           str(tmp_path / "cmp.png"), "--compare"]
    proc = subprocess.run([*cmd, str(runs / "class")], capture_output=True, text=True)
    assert proc.returncode == 1 and "two run dirs" in proc.stderr, proc.stderr
    proc = subprocess.run([*cmd, f"{runs / 'class'},{runs / 'class'}"], capture_output=True,
                          text=True)
    assert proc.returncode == 0 and Image.open(tmp_path / "cmp.png").size[0] > 0
