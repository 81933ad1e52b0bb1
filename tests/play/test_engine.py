"""The playground's engine without a web server: checks of every request field, the events of
a generation, the same images as `sample` from the same seed, cancelling, taking turns, and a
bounded queue."""

from __future__ import annotations

import base64
import io
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from inkfuse.artifacts.run import load_run
from inkfuse.errors import ConfigError, DataError
from inkfuse.pipelines import sample
from inkfuse.play import engine
from inkfuse.play.engine import Busy, ModelThread, Playground
from inkfuse.viz import make_grid

RUNS = Path(__file__).resolve().parents[1] / "fixtures" / "old-runs"


@pytest.fixture(scope="module")
def playground() -> Playground:
    pg = Playground([RUNS / "class", RUNS / "text", RUNS / "latent"])
    yield pg
    pg.close()


def events_of(pg: Playground, body: dict) -> list[tuple[str, dict]]:
    got: list[tuple[str, dict]] = []
    job = pg.submit(pg.check(body), lambda name, data: got.append((name, data)))
    assert job.finished.wait(60)
    return got


def png_url(pixels: np.ndarray) -> str:
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def decode(url: str) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))))


def test_runs_are_described_for_the_page(playground):
    runs = {r["id"]: r for r in playground.describe()}
    assert runs["class"]["kind"] == "class" and len(runs["class"]["classes"]) == 4
    assert runs["text"]["kind"] == "text" and runs["text"]["prompts"]
    assert runs["latent"]["latent"] is True
    ddim = next(s for s in runs["class"]["samplers"] if s["name"] == "ddim")
    assert ddim["options"] == ["eta"]


@pytest.mark.parametrize(("body", "message"), [
    ({"run": "nope"}, "no run named 'nope'"),
    ({"run": "class", "steps": 0}, "steps must be >= 1 and <= 1000, got 0"),
    ({"run": "class", "steps": 2.5}, "steps must be a whole number"),
    ({"run": "class", "steps": "50"}, "steps must be a whole number"),
    ({"run": "class", "guidance": float("nan")}, "guidance must be >= 0"),
    ({"run": "class", "n": 65}, "n must be >= 1 and <= 64"),
    ({"run": "class", "label": 4}, "label must be >= 0 and <= 3"),
    ({"run": "class", "sampler": "magic"}, "magic"),
    ({"run": "class", "mode": "dance"}, "mode must be one of"),
    ({"run": "class", "mode": "sweep", "guidances": []}, "guidances must be a list"),
    ({"run": "text", "prompt": "a purple unicorn"}, "never saw in training: purple, unicorn"),
    ({"run": "text", "prompt": "x" * 501}, "at most 500 characters"),
    ({"run": "class", "mode": "img2img", "image": "not an image"}, "must be an image"),
    ({"run": "class", "mode": "img2img", "image": "data:image/png;base64,!!"}, "not valid base64"),
    ({"run": "class", "mode": "img2img", "image": "data:image/png;base64,aGVsbG8="},
     "not a readable image"),
    ({"run": "class", "mode": "img2img", "image": None, "strength": 0}, "must be an image"),
])
def test_bad_requests_get_one_line(playground, body, message):
    with pytest.raises((ConfigError, DataError), match=message.replace("(", r"\(")) as e:
        playground.check(body)
    assert "\n" not in str(e.value)


def test_a_mask_must_match_its_image(playground):
    image = png_url(np.zeros((16, 16, 3), np.uint8))
    mask = png_url(np.zeros((8, 8), np.uint8))
    with pytest.raises(DataError, match="the mask is 8x8 but the image 16x16"):
        playground.check({"run": "class", "mode": "inpaint", "image": image, "mask": mask})


def test_a_generation_streams_steps_then_the_same_images_as_sample(playground):
    got = events_of(playground, {"run": "class", "steps": 4, "n": 4, "seed": 7, "label": 2,
                                 "guidance": 2.0})
    names = [name for name, _ in got]
    assert names[0] == "start" and names[-2:] == ["panel", "done"]
    steps = [d for name, d in got if name == "step"]
    assert steps[0]["i"] == 1 and steps[0]["steps"] == 4 and steps[0]["nfe"] == 1
    assert decode(steps[0]["x"]).shape == decode(steps[0]["x0"]).shape == (35, 35, 3)
    panel = got[-2][1]
    assert (panel["width"], panel["height"], panel["n"], panel["nfe"]) == (16, 16, 4, 4)
    run = load_run(RUNS / "class")
    expected = sample(run, 4, labels=torch.tensor([2]), steps=4, guidance=2.0, seed=7,
                      progress=False)
    assert np.array_equal(decode(panel["image"]), make_grid(expected, nrow=2, padding=1))


def test_compare_and_sweep_draw_every_panel_from_the_same_noise(playground):
    got = events_of(playground, {"run": "class", "mode": "compare", "steps": 3, "label": 1,
                                 "sampler": "ddim", "sampler_b": "ddim", "guidance": 3,
                                 "guidance_b": 3})
    a, b = (d["image"] for name, d in got if name == "panel")
    assert a == b  # the same sampler and weight from the same seed: the same picture
    got = events_of(playground, {"run": "text", "mode": "sweep", "steps": 3,
                                 "prompt": "a red circle", "guidances": [0, 4]})
    assert got[0][1]["panels"] == ["w=0", "w=4"]
    w0, w4 = (d["image"] for name, d in got if name == "panel")
    assert w0 != w4


def test_heun_counts_its_real_model_calls(playground):
    got = events_of(playground, {"run": "class", "steps": 3, "sampler": "heun"})
    assert got[-2][1]["nfe"] == 5  # 2N - 1


def test_inpaint_keeps_the_known_pixels_and_img2img_keeps_the_size(playground):
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)  # not the model's size
    mask = np.zeros((20, 24), np.uint8)
    mask[:, 12:] = 255
    got = events_of(playground, {"run": "class", "mode": "inpaint", "steps": 3,
                                 "image": png_url(pixels), "mask": png_url(mask)})
    out = decode(got[-2][1]["image"])
    assert out.shape == (20, 24, 3) and np.array_equal(out[:, :12], pixels[:, :12])
    got = events_of(playground, {"run": "latent", "mode": "img2img", "steps": 3,
                                 "strength": 0.5, "image": png_url(pixels)})
    assert decode(got[-2][1]["image"]).shape == (20, 24, 3)


def test_an_error_during_sampling_is_one_event_and_the_next_request_works(playground,
                                                                          monkeypatch):
    def broken(*args, **kwargs):
        raise ConfigError("something the user can fix")

    monkeypatch.setattr(engine, "sample", broken)
    got = events_of(playground, {"run": "class", "steps": 2})
    assert got[-1] == ("error", {"message": "something the user can fix"})
    monkeypatch.undo()
    assert events_of(playground, {"run": "class", "steps": 2})[-1][0] == "done"


def test_a_cancelled_request_stops_at_its_next_step(playground):
    got: list[tuple[str, dict]] = []

    def emit(name: str, data: dict) -> None:
        got.append((name, data))
        if name == "step":
            job.cancel()

    job = playground.submit(playground.check({"run": "class", "steps": 20}), emit)
    assert job.finished.wait(60)
    assert [n for n, _ in got] == ["start", "step", "cancelled"]


def test_requests_take_turns_on_the_model_call_by_call():
    model, order = ModelThread(), []
    record = order.append

    def worker(name: str) -> None:
        for i in range(3):
            model.run(record, f"{name}{i}")

    threads = [threading.Thread(target=worker, args=(x,)) for x in "bc"]
    threads[0].start()
    while model._calls.qsize() < 1:  # b's first call waits, then c's: nothing serves yet
        threading.Event().wait(0.001)
    threads[1].start()
    while model._calls.qsize() < 2:
        threading.Event().wait(0.001)
    server = threading.Thread(target=model.serve)
    server.start()
    for t in threads:
        t.join(10)
    model.stop()
    server.join(10)
    # c's first call came in while b's first waited: it is served next, before b's second
    assert order[:2] == ["b0", "c0"] and sorted(order) == ["b0", "b1", "b2", "c0", "c1", "c2"]


def test_a_failing_model_call_raises_in_the_caller():
    model = ModelThread()
    server = threading.Thread(target=model.serve)
    server.start()
    with pytest.raises(ZeroDivisionError):
        model.run(lambda: 1 / 0)
    assert model.run(lambda: 2) == 2  # and it serves on
    model.stop()
    server.join(10)


def test_a_full_queue_refuses_at_once(playground, monkeypatch):
    monkeypatch.setattr(engine, "MAX_ACTIVE", 0)
    monkeypatch.setattr(engine, "MAX_WAITING", 0)
    with pytest.raises(Busy, match="busy"):
        playground.submit(playground.check({"run": "class", "steps": 2}), lambda *a: None)
