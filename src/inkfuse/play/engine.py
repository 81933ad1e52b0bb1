"""The playground's engine, free of any web library: what a request may ask for (checked here,
the one place), which runs it can draw from, and how requests share the model while streaming
what every sampler step made.

**One thread runs the network; requests take turns on it, a model call at a time.** Two CPU
cores run one network well and two at once badly (their threads fight over the cores), so the
network never runs for two requests at the same time. But first come, first served would make
the eighth browser wait for seven whole generations before it saw anything. So each request
walks its sampler in its own worker thread, and every network call is handed to the one model
thread through a FIFO queue (`ModelThread`): with one call per request in the queue at a time,
requests alternate call by call, every waiting request sees its first preview after about one
step per request ahead of it, and the total work is unchanged. In `inkfuse play` the model
thread is the main thread and the web app runs on another: a whole `sample` call ran about 30%
slower from a secondary thread than from the main one on the benchmark CPU (benchmarks/README.md).
At most `MAX_ACTIVE` requests run and `MAX_WAITING` wait; beyond that a request is refused at
once with a one-line "busy" error, so memory stays bounded (each request holds at most `N_MAX`
images).

Events, in order, each `(name, data)`: `start` {panels: titles}; per step `step` {panel, i,
steps, nfe, ms, x, x0} (x_t and the predicted x̂0 as PNG data URLs, at most one per
`PREVIEW_EVERY_S` but always the first); per panel `panel` {panel, image, nfe, ms, width,
height}; then one of `done` {ms}, `error` {message} or `cancelled` {}.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import io
import math
import queue
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torch import Tensor

from inkfuse.artifacts.run import Run, load_run
from inkfuse.data.folder import load_image
from inkfuse.diffusion import Prediction
from inkfuse.diffusion.samplers import SAMPLERS, get_sampler
from inkfuse.editing import img2img, inpaint
from inkfuse.errors import ConfigError, DataError, InkfuseError
from inkfuse.pipelines import parse_mix, recipe_options, sample
from inkfuse.viz import make_grid

# Limits of one request. Tighter than the CLI's: a server must bound what one browser can ask
# of memory and of everyone else's waiting time.
STEPS_MAX = 1000
N_MAX = 64
GUIDANCE_MAX = 30.0
SEED_MAX = 2**31 - 1
CHURN_MAX = 100.0
SWEEP_MAX = 8
PROMPT_MAX = 500  # characters; the text encoder's own context limit is checked after this
IMAGE_BYTES_MAX = 8 << 20
MAX_ACTIVE, MAX_WAITING = 8, 32
PREVIEW_EVERY_S = 0.04
MODES = ("sample", "compare", "sweep", "inpaint", "img2img")


class Busy(InkfuseError):
    """Too many requests are waiting: this one is refused before it takes any memory."""


class Cancelled(Exception):
    """Raised inside a sampler's step hook when the request was cancelled (the browser left)."""


# ----------------------------------------------------------------------------- requests


@dataclass(frozen=True)
class Panel:
    """One generation of a request: a sampler at a guidance weight (compare and sweep have
    several, drawn from the same seed, hence the same noise)."""

    title: str
    sampler: str
    guidance: float


@dataclass(frozen=True)
class Request:
    """What a browser asked for, checked: every field is in range, the run exists, the sampler
    is known, the prompt is one the run's text encoder can read, images decode."""

    run: str
    mode: str
    panels: tuple[Panel, ...]
    steps: int
    seed: int
    n: int
    options: Mapping[str, float] = field(default_factory=dict)  # eta, churn where they apply
    prompt: str | None = None
    label: int | None = None
    context: tuple[float, ...] | None = None
    image: Tensor | None = None  # [C, H, W] in [-1, 1], for inpaint / img2img
    mask: Tensor | None = None  # [1, H, W], 1 = fill
    strength: float = 0.6


def _number(body: Mapping[str, Any], key: str, kind: type, default: Any, lo: float, hi: float,
            *, open_lo: bool = False) -> Any:
    value = body.get(key, default)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or (
            kind is int and not float(value).is_integer()):
        raise ConfigError(f"{key} must be {'a whole number' if kind is int else 'a number'}, "
                          f"got {value!r}")
    value = kind(value)
    if not math.isfinite(value) or value > hi or value < lo or (open_lo and value == lo):
        low = f"> {lo:g}" if open_lo else f">= {lo:g}"
        raise ConfigError(f"{key} must be {low} and <= {hi:g}, got {value:g}")
    return value


def _decode_image(data: Any, what: str, channels: int) -> Tensor:
    """A data URL (`data:image/png;base64,...`) as uint8 [channels, H, W]."""
    if not isinstance(data, str) or not data.startswith("data:image/") or "," not in data:
        raise DataError(f"the {what} must be an image (a PNG or JPEG data URL)")
    if len(data) > IMAGE_BYTES_MAX * 4 // 3 + 100:
        raise DataError(f"the {what} is larger than {IMAGE_BYTES_MAX >> 20} MB; use a smaller "
                        "image")
    try:
        raw = base64.b64decode(data.split(",", 1)[1], validate=True)
    except (binascii.Error, ValueError):
        raise DataError(f"the {what} is not valid base64 image data; upload it again") from None
    return load_image(raw, None, channels, name=f"the {what}")


class Playground:
    """The runs a playground serves, keyed by their directory names, and its request queue."""

    def __init__(self, run_dirs: list[str | Path], device: str = "cpu", *,
                 model_thread: bool = True) -> None:
        """`model_thread`: start a thread for the network calls; False leaves them to whoever
        calls `model.serve()` (the main thread, in `inkfuse play`)."""
        self.model = ModelThread()
        if not run_dirs:
            raise ConfigError("give at least one run dir: inkfuse play RUN [RUN ...]")
        self.runs: dict[str, Run] = {}
        for d in run_dirs:
            run = load_run(d, device=device)
            if run.config.data.low_res:
                raise ConfigError(f"{d} is a super-resolution model, which needs a base run's "
                                  "images; serve the base run instead")
            key = Path(d).resolve().name
            while key in self.runs:  # two runs of the same name from different folders
                key += "'"
            self.runs[key] = dataclasses.replace(run, net=OnModelThread(run.net, self.model))
        if model_thread:  # only once every run loaded: a bad run dir leaves no thread behind
            threading.Thread(target=self.model.serve, name="inkfuse-model", daemon=True).start()
        self._pool = ThreadPoolExecutor(MAX_ACTIVE, thread_name_prefix="inkfuse-play")
        self._lock = threading.Lock()
        self._pending = 0

    # --- what the page needs to know ---------------------------------------------------------

    def describe(self) -> list[dict[str, Any]]:
        """Each run as the page shows it: its kind, size, classes or prompts, sampler defaults."""
        return [_describe(key, run) for key, run in self.runs.items()]

    # --- checking ------------------------------------------------------------------------------

    def check(self, body: Mapping[str, Any]) -> Request:
        """The JSON body of a request as a `Request`, or a one-line ConfigError / DataError."""
        if not isinstance(body, Mapping):
            raise ConfigError("the request must be a JSON object")
        key = body.get("run")
        if key not in self.runs:
            names = ", ".join(self.runs)
            raise ConfigError(f"no run named {key!r} is served here (these are: {names})")
        run = self.runs[key]
        mode = body.get("mode", "sample")
        if mode not in MODES:
            raise ConfigError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
        s = run.config.sample
        sampler = self._sampler(body.get("sampler", s.sampler))
        guidance = _number(body, "guidance", float, s.guidance, 0, GUIDANCE_MAX)
        steps = _number(body, "steps", int, s.steps, 1, STEPS_MAX)
        seed = _number(body, "seed", int, 0, 0, SEED_MAX)
        n = _number(body, "n", int, 1, 1, N_MAX)
        options: dict[str, float] = {}
        for name, hi in (("eta", 1.0), ("churn", CHURN_MAX)):
            value = _number(body, name, float, None, 0, hi)
            if value is not None:
                options[name] = value
        panels = (Panel(f"{sampler} w={guidance:g}", sampler, guidance),)
        if mode == "compare":
            other = self._sampler(body.get("sampler_b", sampler))
            w_b = _number(body, "guidance_b", float, guidance, 0, GUIDANCE_MAX)
            panels += (Panel(f"{other} w={w_b:g}", other, w_b),)
        elif mode == "sweep":
            weights = body.get("guidances", [0, 1, 2, 4, 8])
            if not isinstance(weights, list) or not 1 <= len(weights) <= SWEEP_MAX:
                raise ConfigError(f"guidances must be a list of 1 to {SWEEP_MAX} weights")
            ws = [_number({"guidance": w}, "guidance", float, 0, 0, GUIDANCE_MAX) for w in weights]
            panels = tuple(Panel(f"w={w:g}", sampler, w) for w in ws)
        prompt, label, context = self._condition(run, body)
        image = mask = None
        strength = 0.6
        if mode in ("inpaint", "img2img"):
            channels = run.image_shape[0]
            image = _decode_image(body.get("image"), "image", channels).float() / 127.5 - 1
            if mode == "inpaint":
                mask = _decode_image(body.get("mask"), "mask", 1).float() / 255
                if mask.shape[-2:] != image.shape[-2:]:
                    raise DataError(f"the mask is {mask.shape[-1]}x{mask.shape[-2]} but the "
                                    f"image {image.shape[-1]}x{image.shape[-2]}; draw the mask "
                                    "on the image itself")
                mask = (mask > 0.5).float()
                panels = (Panel("inpaint (RePaint)", "ddpm", guidance),)
            else:
                strength = _number(body, "strength", float, 0.6, 0, 1, open_lo=True)
                panels = (Panel(f"img2img {sampler} strength {strength:g}", sampler, guidance),)
        return Request(key, mode, panels, steps, seed, n, options, prompt, label, context, image,
                       mask, strength)

    def _sampler(self, name: Any) -> str:
        if not isinstance(name, str) or name not in SAMPLERS:
            get_sampler(str(name))  # its one-line error lists the samplers
        return name

    def _condition(self, run: Run, body: Mapping[str, Any]
                   ) -> tuple[str | None, int | None, tuple[float, ...] | None]:
        if run.text is not None:
            prompt = body.get("prompt") or ""
            if not isinstance(prompt, str) or len(prompt) > PROMPT_MAX:
                raise ConfigError(f"the prompt must be text of at most {PROMPT_MAX} characters")
            prompt = prompt.strip()
            if prompt:
                for text in parse_mix(prompt)[0]:  # a word the encoder never read: one line
                    run.text.check(text)
            return prompt or None, None, None
        dim = run.config.model.cond_dim
        if not dim:
            return None, None, None
        if run.config.data.labels == "context":
            context = body.get("context")
            if context is None:
                return None, None, None
            if not isinstance(context, list) or len(context) != dim:
                names = ", ".join(run.context_names) or f"{dim} values"
                raise ConfigError(f"context must be a list of {dim} numbers ({names})")
            return None, None, tuple(_number({"context": v}, "context", float, 0, -10, 10)
                                     for v in context)
        label = _number(body, "label", int, None, 0, dim - 1)
        return None, label, None

    # --- running -------------------------------------------------------------------------------

    def submit(self, request: Request, emit: Callable[[str, dict], None]) -> Job:
        """Queue `request`; `emit(event, data)` is called from a worker thread for each event.
        A `Busy` error when `MAX_WAITING` requests are already waiting for a worker."""
        with self._lock:
            if self._pending >= MAX_ACTIVE + MAX_WAITING:
                raise Busy(f"the playground is busy ({self._pending} requests in progress or "
                           "waiting); try again in a moment")
            self._pending += 1
        job = Job(request, emit)
        self._pool.submit(self._work, job)
        return job

    def _work(self, job: Job) -> None:
        try:
            if job.cancelled.is_set():
                job.emit("cancelled", {})
                return
            t0 = time.perf_counter()
            job.emit("start", {"panels": [p.title for p in job.request.panels]})
            for index, panel in enumerate(job.request.panels):
                self._panel(job, index, panel)
            job.emit("done", {"ms": round((time.perf_counter() - t0) * 1000, 1)})
        except Cancelled:
            job.emit("cancelled", {})
        except InkfuseError as e:
            job.emit("error", {"message": str(e)})
        except Exception as e:  # the server keeps serving; the page gets one line
            job.emit("error", {"message": f"generation failed: {type(e).__name__}: {e}"})
        finally:
            with self._lock:
                self._pending -= 1
            job.finished.set()

    def _panel(self, job: Job, index: int, panel: Panel) -> None:
        r, run = job.request, self.runs[job.request.run]
        _calls.n = 0
        t0 = last = time.perf_counter()

        def on_step(i: int, x: Tensor, pred: Prediction) -> None:
            nonlocal last
            if job.cancelled.is_set():
                raise Cancelled
            now = time.perf_counter()
            if i == 0 or now - last >= PREVIEW_EVERY_S:
                last = now
                x0 = pred.x0 if run.latent is None else run.latent.decode(pred.x0.float())
                job.emit("step", {"panel": index, "i": i + 1, "steps": r.steps, "nfe": _calls.n,
                                  "ms": round((now - t0) * 1000, 1), "x": _png(x),
                                  "x0": _png(x0.clamp(-1, 1))})

        images = self._generate(run, r, panel, on_step)
        job.emit("panel", {"panel": index, "image": _png(images), "nfe": _calls.n,
                           "ms": round((time.perf_counter() - t0) * 1000, 1),
                           "width": images.shape[-1], "height": images.shape[-2], "n": len(images)})

    def _generate(self, run: Run, r: Request, panel: Panel, on_step: Callable) -> Tensor:
        entry = get_sampler(panel.sampler)
        options = recipe_options(run, panel.sampler) | entry.select(r.options)
        cond: dict[str, Any] = {}
        if r.prompt is not None:
            cond["prompts"] = [r.prompt]
        elif r.label is not None:
            cond["labels"] = torch.tensor([r.label])
        elif r.context is not None:
            cond["context"] = torch.tensor([r.context])
        if r.mode == "inpaint":
            image = r.image[None].expand(r.n, -1, -1, -1)
            return inpaint(run, image, r.mask[None], steps=r.steps, guidance=panel.guidance,
                           seed=r.seed, progress=False, on_step=on_step, **cond)
        if r.mode == "img2img":
            image = r.image[None].expand(r.n, -1, -1, -1)
            return img2img(run, image, strength=r.strength, steps=r.steps, sampler=panel.sampler,
                           guidance=panel.guidance, seed=r.seed, progress=False,
                           on_step=on_step, **cond, **options)
        return sample(run, r.n, sampler=panel.sampler, steps=r.steps, guidance=panel.guidance,
                      seed=r.seed, progress=False, on_step=on_step, **cond, **options)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        self.model.stop()


class Job:
    """One submitted request: `cancel()` stops it at its next step; `finished` is set when its
    last event has been emitted."""

    def __init__(self, request: Request, emit: Callable[[str, dict], None]) -> None:
        self.request, self.emit = request, emit
        self.cancelled, self.finished = threading.Event(), threading.Event()

    def cancel(self) -> None:
        self.cancelled.set()


class ModelThread:
    """The one thread that runs every network call, in the order the calls arrive.

    `serve()` runs calls until `stop()`; `run(fn, *args)` from any other thread queues the call
    and waits for its result (an exception is raised in the caller)."""

    def __init__(self) -> None:
        self._calls: queue.SimpleQueue = queue.SimpleQueue()
        self._ident: int | None = None

    def serve(self) -> None:
        self._ident = threading.get_ident()
        while (call := self._calls.get()) is not None:
            fn, args, kwargs, future = call
            try:
                with torch.no_grad():
                    future.set_result(fn(*args, **kwargs))
            except BaseException as e:  # handed to the caller, which raises it
                future.set_exception(e)

    def stop(self) -> None:
        self._calls.put(None)

    def run(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        if threading.get_ident() == self._ident:
            return fn(*args, **kwargs)
        future: Future = Future()
        self._calls.put((fn, args, kwargs, future))
        return future.result()


class OnModelThread(torch.nn.Module):
    """A network whose every call runs on `model`'s thread, under the autocast of the thread
    that asked (autocast is thread-local: a bf16 run would otherwise run in fp32 there); counts
    the calls of that thread (the model calls a panel shows)."""

    def __init__(self, net: torch.nn.Module, model: ModelThread) -> None:
        super().__init__()
        self.net, self.model = net, model

    def forward(self, x: Tensor, *args: Any, **kwargs: Any) -> Tensor:
        _calls.n = getattr(_calls, "n", 0) + 1
        kind = x.device.type
        autocast = torch.autocast(kind, dtype=torch.get_autocast_dtype(kind),
                                  enabled=torch.is_autocast_enabled(kind))
        return self.model.run(_under, autocast, self.net, x, *args, **kwargs)


def _under(context: Any, fn: Callable[..., Tensor], *args: Any, **kwargs: Any) -> Tensor:
    with context:
        return fn(*args, **kwargs)


_calls = threading.local()  # model calls of the panel this worker thread is drawing


def _png(images: Tensor) -> str:
    """A batch [N, C, H, W] in [-1, 1] as one PNG grid, as a data URL."""
    n = len(images)
    grid = make_grid(images.float(), nrow=math.ceil(math.sqrt(n)), padding=1 if n > 1 else 0)
    picture = Image.fromarray(grid[..., 0] if grid.shape[-1] == 1 else grid)
    buf = io.BytesIO()
    picture.save(buf, format="PNG", compress_level=1)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _describe(key: str, run: Run) -> dict[str, Any]:
    s, dim = run.config.sample, run.config.model.cond_dim
    if run.text is not None:
        kind = "text"
    elif not dim:
        kind = "unconditional"
    else:
        kind = "context" if run.config.data.labels == "context" else "class"
    channels, height, width = run.image_shape
    return {
        "id": key, "kind": kind, "size": [height, width], "channels": channels,
        "timesteps": run.schedule.T,
        "latent": run.latent is not None,
        "classes": (run.class_names or [str(i) for i in range(dim)]) if kind == "class" else [],
        "context": (run.context_names or [str(i) for i in range(dim)]) if kind == "context"
        else [],
        "prompts": run.prompts[:12] if kind == "text" else [],
        "defaults": {"sampler": s.sampler, "steps": s.steps, "guidance": s.guidance,
                     "eta": s.eta},
        "samplers": [{"name": name, "spacing": e.spacing, "nfe": e.nfe(s.steps),
                      "options": sorted(e.options)} for name, e in SAMPLERS.items()],
        "limits": {"steps": STEPS_MAX, "n": N_MAX, "guidance": GUIDANCE_MAX, "seed": SEED_MAX,
                   "churn": CHURN_MAX},
    }
