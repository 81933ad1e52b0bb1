"""Pictures people would rather look at than read: grids, GIFs, forward-process strips, plots.

Nothing here computes anything new; it only turns tensors and logs into files. Images come in
as float tensors in [-1, 1], shape [N, C, H, W] with C = 1 (saved as grayscale "L") or 3
("RGB"), on any device and dtype. `nrow` means images per row, as in torchvision. Tiny images
(8-32 px) are enlarged with nearest neighbour, so pixels stay sharp and nothing is invented.
Every file is written atomically (`inkfuse.io.atomic_path`). Plots use matplotlib's Agg canvas
through its object API: no pyplot, so a caller's backend (say, in a notebook) is left alone.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping, Sequence
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw, ImageFont

from inkfuse.errors import DataError, InkfuseError
from inkfuse.io import atomic_path

if TYPE_CHECKING:
    from matplotlib.figure import Figure

PathLike = str | os.PathLike[str]
MIN_SIDE = 256  # auto scale enlarges a grid until its long side is at least this many pixels


def to_uint8(x: torch.Tensor | np.ndarray) -> np.ndarray:
    """[N, C, H, W] (or [C, H, W]) in [-1, 1] -> uint8 [N, H, W, C].

    Maps v to round((v + 1) * 127.5) clamped to [0, 255]: -1 -> 0, 1 -> 255, and 0 -> 128
    because torch.round rounds half to even (127.5 -> 128). Exact for images that came from
    uint8 as k / 127.5 - 1. NaN becomes mid-gray so a diverged sample still renders.
    """
    x = torch.as_tensor(x).detach()
    if x.ndim == 3:
        x = x[None]
    if x.ndim != 4 or x.shape[1] not in (1, 3):
        raise ValueError(f"expected images [N, C, H, W] with C = 1 or 3, got {tuple(x.shape)}")
    x = x.to("cpu", torch.float32).nan_to_num(0.0)
    x = ((x + 1) * 127.5).clamp(0, 255).round().to(torch.uint8)
    return x.permute(0, 2, 3, 1).contiguous().numpy()


def make_grid(
    x: torch.Tensor | np.ndarray, nrow: int, padding: int = 2, pad_value: float = 1.0
) -> np.ndarray:
    """Tile images, `nrow` per row, into one uint8 array [H, W, C].

    Size: rows * (h + padding) + padding by min(nrow, N) * (w + padding) + padding, like
    torchvision. `pad_value` is in image units ([-1, 1]; 1 = white) and fills empty cells too.
    """
    return _tile(to_uint8(x), nrow, padding, pad_value)


def save_grid(
    x: torch.Tensor | np.ndarray,
    path: PathLike,
    nrow: int,
    scale: int | None = None,
    labels: Sequence[str] | None = None,
    padding: int = 2,
    pad_value: float = 1.0,
) -> None:
    """Save a grid (PNG, or any format PIL knows from the suffix).

    `scale` enlarges by an integer factor; None picks the smallest one that makes the long side
    at least 256 px. `labels`, one per row (e.g. class names), are written at the left.
    """
    img, ys, _ = _render(to_uint8(x), nrow, scale, padding, pad_value)
    if labels is not None:
        if len(labels) != len(ys):
            raise ValueError(f"got {len(labels)} labels for a grid of {len(ys)} rows")
        img = _annotate(img, left=list(zip(ys, labels, strict=True)))
    _save_image(img, path)


def save_gif(
    frames: Sequence[torch.Tensor],
    path: PathLike,
    nrow: int,
    fps: float = 10.0,
    hold_last: float = 1.0,
    scale: int | None = None,
) -> None:
    """Animate the reverse process: each frame [N, C, H, W] becomes a grid.

    The last frame is held `hold_last` seconds so the result can be seen before the loop
    restarts. Pass tens of frames, not every step. Pillow merges identical consecutive frames
    (adding their durations), so the file may hold fewer frames than given but plays the same.
    """
    if not frames:
        raise ValueError("save_gif needs at least one frame")
    first = _tile(to_uint8(frames[0]), nrow)
    s = scale if scale is not None else _auto_scale(first)  # one size for every frame
    images = [_render(to_uint8(f), nrow, s)[0] for f in frames]
    _save_gif(images, path, fps, hold_last)


def save_forward_strip(
    x0: torch.Tensor,
    noisy: Sequence[torch.Tensor],
    labels: Sequence[str],
    path: PathLike,
    scale: int | None = None,
    fps: float = 2.0,
) -> None:
    """Show the forward process: one row per image, columns x0 then each noisy version.

    `labels` name the noisy columns (e.g. "t=250"; the first column is then called "x0") or
    every column including x0; each is written above its column. A path ending in .gif
    animates instead: one frame per column, the images side by side under its label.
    """
    cols = [x0, *noisy]
    labels = ["x0", *labels] if len(labels) == len(noisy) else list(labels)
    if len(labels) != len(cols):
        raise ValueError(f"got {len(labels)} labels for {len(noisy)} noisy tensors")
    u8 = [to_uint8(c) for c in cols]
    if any(u.shape != u8[0].shape for u in u8):
        raise ValueError(f"noisy tensors must all have x0's shape {tuple(x0.shape)}")
    n = u8[0].shape[0]
    if Path(path).suffix.lower() == ".gif":
        images = [_render(u, n, scale)[0] for u in u8]
        images = [
            _annotate(im, top=[(im.width / 2, lab)])
            for im, lab in zip(images, labels, strict=True)
        ]
        _save_gif(images, path, fps, hold_last=1.0)
        return
    stacked = np.stack(u8, axis=1).reshape(-1, *u8[0].shape[1:])  # row-major: image i, column k
    img, _, xs = _render(stacked, len(cols), scale)
    _save_image(_annotate(img, top=list(zip(xs, labels, strict=True))), path)


def plot_loss(
    log_path_or_records: PathLike | Iterable[Mapping[str, Any]], path: PathLike
) -> None:
    """Loss vs step from a JSONL log (or its records): raw loss, a smoothed line, lr if logged;
    below it, one panel per in-training score if the log has any (`train.eval_every`).

    Loss records have "step" and "loss"; score records "step" and "eval" ({metric: value},
    null where it could not be computed, left out of the line); other records are ignored. A
    step logged twice (a run resumed from an earlier checkpoint) keeps its latest record. The
    smoothed line is the logged "ema_loss" when present, else a debiased EMA of the points.
    Log-y when loss > 0.
    """
    log = log_path_or_records
    is_file = isinstance(log, str | os.PathLike)
    records = _read_jsonl(log) if is_file else list(log)
    records = [r for r in records if isinstance(r, Mapping)]
    points = [r for r in records if {"step", "loss"} <= r.keys()]
    by_step = {r["step"]: r for r in points}
    if not by_step:
        raise DataError(f"{log if is_file else 'records'}: no records with 'step' and 'loss' "
                        "to plot")
    recs = [by_step[s] for s in sorted(by_step)]
    step, loss = (np.array([r[k] for r in recs], dtype=float) for k in ("step", "loss"))
    scores = _scores(records)

    fig = _figure(figsize=(7, 4 + 1.8 * len(scores)))
    axes = fig.subplots(1 + len(scores), 1, sharex=True, squeeze=False,
                        height_ratios=[2.2] + [1] * len(scores))[:, 0]
    ax = axes[0]
    lines = ax.plot(step, loss, color="C0", lw=0.8, alpha=0.35, label="loss")
    ema = [r for r in recs if r.get("ema_loss") is not None]
    if ema:
        lines += ax.plot([r["step"] for r in ema], [r["ema_loss"] for r in ema], color="C0",
                         lw=1.6, label="ema_loss")
    else:
        lines += ax.plot(step, _smooth(loss), color="C0", lw=1.6, label="loss (smoothed)")
    finite = loss[np.isfinite(loss)]
    if finite.size and finite.min() > 0:
        ax.set_yscale("log")
    ax.set(xlabel="" if scores else "step", ylabel="loss")
    ax.grid(alpha=0.3, which="both")
    lr = [r for r in recs if r.get("lr") is not None]
    if lr:
        ax2 = ax.twinx()
        lines += ax2.plot([r["step"] for r in lr], [r["lr"] for r in lr], color="C1", lw=1,
                          label="lr")
        ax2.set_ylabel("learning rate")
    # outside the axes: the loss curve and the lr curve between them leave no free corner
    fig.legend(lines, [ln.get_label() for ln in lines], loc="outside upper center",
               ncols=len(lines), frameon=False)
    for i, (name, (x, y)) in enumerate(scores.items()):
        axes[i + 1].plot(x, y, color=f"C{i + 2}", marker="o", ms=3, lw=1.2)
        axes[i + 1].set(ylabel=name)
        axes[i + 1].grid(alpha=0.3)
    if scores:
        axes[-1].set_xlabel("step")
    _save_figure(fig, path)


def _scores(records: Iterable[Mapping[str, Any]]) -> dict[str, tuple[list[float], list[float]]]:
    """{metric: (steps, values)} of the score records (the latest per step), nulls left out."""
    latest = {r["step"]: r["eval"] for r in records
              if "step" in r and isinstance(r.get("eval"), Mapping)}
    out: dict[str, tuple[list[float], list[float]]] = {}
    for s in sorted(latest):
        for name, value in latest[s].items():
            if isinstance(value, int | float) and not isinstance(value, bool):
                xs, ys = out.setdefault(name, ([], []))
                xs.append(s)
                ys.append(float(value))
    return out


def plot_upsampling(path: PathLike, size: int = 6, seed: int = 0) -> None:
    """The course's upsampling lesson: a constant `size`² image doubled three ways, with the
    output-size arithmetic of each, H_out = (H_in − 1)·s − 2p + (k − 1) + op + 1 (PyTorch's
    ConvTranspose2d, dilation 1).

    Top row, all-ones weights: each output pixel counts the kernel taps that land on it. A
    stride-2 transposed conv with k = 3 overlaps unevenly (1, 2 or 4 taps: the checkerboard);
    k = 4 overlaps evenly inside (4 everywhere) but not at the border; nearest-neighbour
    doubling then a 3×3 conv gives every inner pixel the same 9. Bottom row, one random kernel
    (`seed`): a transposed conv gives each of the 2×2 output phases its own subset of the taps,
    so even k = 4 paints a period-2 pattern on a flat image, which nearest + conv cannot do.
    """
    x = torch.ones(1, 1, size, size)
    gen = torch.Generator().manual_seed(seed)
    cases = [("transposed", 3, 1, 1), ("transposed", 4, 1, 0), ("nearest + conv", 3, 1, 0)]
    fig = _figure(figsize=(12, 7.6))
    axes = fig.subplots(2, 3)
    for col, (kind, k, p, op) in enumerate(cases):
        for row, weights in enumerate(("ones", "random")):
            w = (torch.ones(1, 1, k, k) if weights == "ones"
                 else torch.randn(1, 1, k, k, generator=gen))
            if kind == "transposed":
                y = F.conv_transpose2d(x, w, stride=2, padding=p, output_padding=op)
                out = (size - 1) * 2 - 2 * p + (k - 1) + op + 1
                assert y.shape[-1] == out, "the size rule above is PyTorch's"
                rule = f"out = ({size}−1)·2 − 2·{p} + ({k}−1) + {op} + 1 = {out}"
                title = f"transposed conv k={k} s=2 p={p} op={op}"
            else:
                y = F.conv2d(F.interpolate(x, scale_factor=2, mode="nearest"), w, padding=p)
                rule = f"out = {size}·2 = {2 * size} (nearest), then 3×3 conv, p=1"
                title = "nearest ×2 + 3×3 conv"
            img = y[0, 0].numpy()
            ax = axes[row, col]
            im = ax.imshow(img, cmap="magma")
            fig.colorbar(im, ax=ax, shrink=0.8)
            if img.shape[0] <= 14 and weights == "ones":
                for (i, j), v in np.ndenumerate(img):
                    ax.text(j, i, f"{v:g}", ha="center", va="center", fontsize=7,
                            color="black" if im.norm(v) > 0.5 else "white")
            ax.set_xticks([])
            ax.set_yticks([])
            short = title.replace(" s=2 p=1 op=1", "").replace(" s=2 p=1 op=0", "")
            ax.set_title(f"{title}\n{rule}" if row == 0 else f"{short}, a random kernel",
                         fontsize=9)
    fig.suptitle(f"A constant {size}×{size} image, doubled: uneven overlap is the checkerboard")
    _save_figure(fig, path)


def plot_schedule(curves: Mapping[str, Mapping[str, np.ndarray]], path: PathLike) -> None:
    """Noise schedules side by side: ᾱ_t; √ᾱ_t (signal) and √(1-ᾱ_t) (noise); ln SNR(t).

    `curves` maps a schedule name to {"t", "alphas_cumprod", "snr"} arrays. Infinite log SNR
    (SNR 0 or ∞ at the ends of some schedules) is left out rather than breaking the axes.
    """
    fig = _figure(figsize=(13, 3.8))
    a1, a2, a3 = fig.subplots(1, 3)
    for i, (name, c) in enumerate(curves.items()):
        color = f"C{i % 10}"
        t = np.asarray(c["t"], dtype=float)
        ab = np.clip(np.asarray(c["alphas_cumprod"], dtype=float), 0.0, 1.0)
        with np.errstate(divide="ignore"):
            log_snr = np.log(np.asarray(c["snr"], dtype=float))
        a1.plot(t, ab, color=color, label=name)
        a2.plot(t, np.sqrt(ab), color=color, label=rf"{name} $\sqrt{{\bar\alpha_t}}$")
        a2.plot(t, np.sqrt(1 - ab), color=color, ls="--",
                label=rf"{name} $\sqrt{{1-\bar\alpha_t}}$")
        a3.plot(t, np.where(np.isfinite(log_snr), log_snr, np.nan), color=color, label=name)
    a1.set(xlabel="t", ylabel=r"$\bar\alpha_t$", title="signal fraction")
    a2.set(xlabel="t", ylabel="coefficient",
           title=r"$x_t = \sqrt{\bar\alpha_t}\,x_0 + \sqrt{1-\bar\alpha_t}\,\epsilon$")
    a3.set(xlabel="t", ylabel=r"$\ln \mathrm{SNR}(t)$", title="log signal-to-noise ratio")
    for ax in (a1, a2, a3):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    _save_figure(fig, path)


def plot_lines(
    series: Mapping[str, tuple[Sequence[float], Sequence[float]]],
    path: PathLike,
    xlabel: str,
    ylabel: str,
    title: str,
    logx: bool = False,
    logy: bool = False,
) -> None:
    """One marked line per named (xs, ys) series, e.g. FID vs sampling steps per sampler."""
    fig = _figure(figsize=(6.5, 4.2))
    ax = fig.subplots()
    for name, (xs, ys) in series.items():
        ax.plot(xs, ys, marker="o", ms=3, label=name)
    ax.set(xlabel=xlabel, ylabel=ylabel, title=title)
    if logx:
        ax.set_xscale("log")
    if logy:
        ax.set_yscale("log")
    ax.grid(alpha=0.3, which="both")
    if series:
        ax.legend()
    _save_figure(fig, path)


def plot_heatmap(
    matrix: np.ndarray,
    row_labels: Sequence[str],
    col_labels: Sequence[str],
    path: PathLike,
    title: str,
) -> None:
    """A similarity matrix (e.g. CLIP image x text cosine) with its value written in each cell.

    Values are written only up to 400 cells, beyond which they would be unreadable anyway.
    """
    m = np.asarray(matrix, dtype=float)
    if m.ndim != 2 or m.shape != (len(row_labels), len(col_labels)):
        raise ValueError(f"matrix {m.shape} does not match {len(row_labels)} row labels "
                         f"x {len(col_labels)} column labels")
    rows, cols = m.shape
    fig = _figure(figsize=(2.5 + 0.7 * cols, 1.5 + 0.45 * rows))
    ax = fig.subplots()
    im = ax.imshow(m, cmap="viridis", aspect="auto")
    fig.colorbar(im, ax=ax, shrink=0.8)
    ax.set_xticks(range(cols), labels=col_labels, rotation=45, ha="right", rotation_mode="anchor")
    ax.set_yticks(range(rows), labels=row_labels)
    ax.set_title(title)
    if m.size <= 400:
        for (i, j), v in np.ndenumerate(m):  # dark text on the light (high) end of viridis
            ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=8,
                    color="black" if im.norm(v) > 0.5 else "white")
    _save_figure(fig, path)


def save_attention_maps(image: torch.Tensor, maps: torch.Tensor, tokens: Sequence[str],
                        path: PathLike, scale: int | None = None) -> None:
    """The sample, then one tile per token: its attention map [L, H, W] (each pixel's shares
    over the tokens) in "hot" colours over the greyed sample, each map scaled to its own
    maximum; the label gives the token and its mean share of the attention, so a token that
    owns a small region still shows where it is and how much it holds."""
    if maps.ndim != 3 or len(maps) != len(tokens) or maps.shape[1:] != image.shape[1:]:
        raise ValueError(f"maps {tuple(maps.shape)} do not match {len(tokens)} tokens on an "
                         f"image {tuple(image.shape)}")
    base = to_uint8(image)[0].astype(np.float64)  # [H, W, C]
    grey = base.mean(-1, keepdims=True) if base.shape[-1] == 3 else base
    m = maps.detach().float().cpu().numpy()
    v = m / np.maximum(m.reshape(len(m), -1).max(1), 1e-12)[:, None, None]  # [L, H, W]
    hot = np.stack([np.clip(3 * v, 0, 1), np.clip(3 * v - 1, 0, 1), np.clip(3 * v - 2, 0, 1)],
                   -1) * 255  # black -> red -> yellow -> white
    tiles = np.concatenate([np.repeat(base, 3 // base.shape[-1], -1)[None],
                            0.3 * grey[None] + 0.7 * hot]).round().astype(np.uint8)
    # at least 96 px a tile, so that "circle 12%" fits above it
    img, _, xs = _render(tiles, len(tiles), scale or -(-96 // tiles.shape[1]))
    labels = ["sample", *(f"{t} {m[i].mean():.0%}" for i, t in enumerate(tokens))]
    _save_image(_annotate(img, top=list(zip(xs, labels, strict=True))), path)


# ----------------------------------------------------------------------------- helpers


def _tile(u8: np.ndarray, nrow: int, padding: int = 2, pad_value: float = 1.0) -> np.ndarray:
    n, h, w, c = u8.shape
    if nrow < 1 or padding < 0:
        raise ValueError(f"need nrow >= 1 and padding >= 0, got {nrow} and {padding}")
    ncol = min(nrow, n)
    nrows = -(-n // ncol)
    pad = round(min(max((pad_value + 1) * 127.5, 0), 255))
    p = padding
    grid = np.full((nrows * (h + p) + p, ncol * (w + p) + p, c), pad, dtype=np.uint8)
    for i, img in enumerate(u8):
        r, k = divmod(i, ncol)
        grid[p + r * (h + p):p + r * (h + p) + h, p + k * (w + p):p + k * (w + p) + w] = img
    return grid


def _render(
    u8: np.ndarray, nrow: int, scale: int | None, padding: int = 2, pad_value: float = 1.0
) -> tuple[Image.Image, list[float], list[float]]:
    """Grid as a PIL image (L or RGB) enlarged by `scale`, plus the row and column centres."""
    grid = _tile(u8, nrow, padding, pad_value)
    s = scale if scale is not None else _auto_scale(grid)
    if s < 1:
        raise ValueError(f"scale must be a positive integer, got {scale}")
    grid = grid.repeat(s, axis=0).repeat(s, axis=1)
    img = Image.fromarray(np.ascontiguousarray(grid[..., 0] if grid.shape[2] == 1 else grid))
    n, h, w, _ = u8.shape
    ncol = min(nrow, n)
    ys = [s * (padding + r * (h + padding) + h / 2) for r in range(-(-n // ncol))]
    xs = [s * (padding + k * (w + padding) + w / 2) for k in range(ncol)]
    return img, ys, xs


def _auto_scale(grid: np.ndarray) -> int:
    return max(1, -(-MIN_SIDE // max(grid.shape[:2])))


@cache
def _font() -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    return ImageFont.load_default()


def _annotate(
    img: Image.Image,
    left: Sequence[tuple[float, str]] = (),
    top: Sequence[tuple[float, str]] = (),
) -> Image.Image:
    """Add a white margin with labels centred on the given row (left) or column (top) centres."""
    font, gap = _font(), 4
    boxes = {text: font.getbbox(text) for _, text in [*left, *top]}
    mx = max((boxes[t][2] for _, t in left), default=0) + 2 * gap if left else 0
    # "Ag|" fixes the height, so GIF frames with different labels keep one size
    my = max(font.getbbox(t)[3] for t in ["Ag|", *(t for _, t in top)]) + 2 * gap if top else 0
    out = Image.new(img.mode, (img.width + mx, img.height + my), "white")
    out.paste(img, (mx, my))
    draw = ImageDraw.Draw(out)
    for y, text in left:
        l, t, r, b = boxes[text]
        draw.text((gap, my + y - (t + b) / 2), text, fill="black", font=font)
    for x, text in top:
        l, t, r, b = boxes[text]
        x0 = min(max(mx + x - (l + r) / 2, 0), out.width - r)  # keep edge labels inside
        draw.text((x0, gap), text, fill="black", font=font)
    return out


def _save_image(img: Image.Image, path: PathLike) -> None:
    fmt = Image.registered_extensions().get(Path(path).suffix.lower(), "PNG")
    with atomic_path(path) as tmp:
        img.save(tmp, format=fmt)


def _save_gif(images: list[Image.Image], path: PathLike, fps: float, hold_last: float) -> None:
    """Write frames as a looping GIF. RGB frames share one palette (no flicker between frames)
    built from the first and last frame; no dithering, which keeps LZW compression effective."""
    if images[0].mode == "RGB":
        w, h = images[0].size
        ref = Image.new("RGB", (w, 2 * h))
        ref.paste(images[0], (0, 0))
        ref.paste(images[-1], (0, h))
        palette = ref.quantize(256, method=Image.Quantize.MEDIANCUT)
        images = [im.quantize(palette=palette, dither=Image.Dither.NONE) for im in images]
    step = max(20, round(1000 / fps))  # GIF delays are centiseconds; browsers slow < 20 ms
    durations = [step] * (len(images) - 1) + [max(step, round(1000 * hold_last))]
    with atomic_path(path) as tmp:
        images[0].save(tmp, format="GIF", save_all=True, append_images=images[1:],
                       duration=durations, loop=0)


def _figure(**kwargs: Any) -> Figure:
    """A matplotlib Figure on an Agg canvas; matplotlib is optional, so import it only here."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as e:
        raise InkfuseError("plotting needs matplotlib: pip install 'inkfuse[plot]'") from e
    fig = Figure(layout="constrained", **kwargs)
    FigureCanvasAgg(fig)
    return fig


def _save_figure(fig: Figure, path: PathLike) -> None:
    fmt = Path(path).suffix.lstrip(".").lower() or "png"  # explicit: the temp name must not grow
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format=fmt, dpi=120)


def _smooth(y: np.ndarray) -> np.ndarray:
    """Debiased EMA (as TensorBoard draws it) over ~1/20 of the points; skips NaN/inf."""
    beta = 1 - min(1.0, 20 / max(len(y), 1))
    out, m, weight = np.full_like(y, np.nan), 0.0, 0.0
    for i, v in enumerate(y):
        if np.isfinite(v):
            m, weight = beta * m + (1 - beta) * v, beta * weight + (1 - beta)
        if weight:
            out[i] = m / weight
    return out


def _read_jsonl(path: PathLike) -> list[Any]:
    try:
        lines = Path(path).read_text().splitlines()
    except OSError as e:
        raise DataError(f"cannot read log {path}: {e.strerror}") from e
    records = []
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as e:
            if i == len(lines) - 1:  # a run killed mid-write leaves a partial last line
                break
            raise DataError(f"{path}:{i + 1}: not valid JSON ({e.msg}); fix or delete it") from e
    return records
