"""The playground's HTTP face (FastAPI's test client, no browser): the page and its assets, the
runs, a streamed generation, one-line errors as HTTP 400 and the server serving on after them;
`inkfuse play`'s own mistakes as one line."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("fastapi", reason="the play extra is not installed: pip install -e '.[play]'")
pytest.importorskip("httpx", reason="FastAPI's test client needs httpx")
from fastapi.testclient import TestClient

from inkfuse.play.engine import Playground
from inkfuse.play.server import create_app

RUNS = Path(__file__).resolve().parents[1] / "fixtures" / "old-runs"


@pytest.fixture(scope="module")
def client() -> TestClient:
    with TestClient(create_app(Playground([RUNS / "class", RUNS / "text"]))) as c:
        yield c


def stream(client: TestClient, body: dict) -> list[tuple[str, dict]]:
    events = []
    with client.stream("POST", "/api/generate", json=body) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        for block in r.read().decode().split("\n\n"):
            if block:
                name, data = block.split("\n")
                events.append((name.removeprefix("event: "), json.loads(data[6:])))
    return events


def test_the_page_and_its_assets_are_served_by_the_app(client):
    page = client.get("/")
    assert page.status_code == 200 and "/static/play.js" in page.text
    for asset in ("/static/play.js", "/static/play.css"):
        assert client.get(asset).status_code == 200
    assert "http" not in page.text.replace("http-equiv", "")  # nothing from a CDN


def test_runs_and_a_streamed_generation(client):
    assert [r["id"] for r in client.get("/api/runs").json()] == ["class", "text"]
    events = stream(client, {"run": "text", "prompt": "a red circle", "steps": 3, "n": 2})
    assert [n for n, _ in events][:2] == ["start", "step"] and events[-1][0] == "done"


@pytest.mark.parametrize(("body", "status", "message"), [
    (b"{not json", 400, "the request body must be JSON"),
    ({"run": "text", "prompt": "a purple circle"}, 400, "never saw in training: purple"),
    ({"run": "class", "steps": 100_000}, 400, "steps must be >= 1 and <= 1000"),
])
def test_bad_requests_are_one_line_and_the_server_keeps_serving(client, body, status, message):
    r = (client.post("/api/generate", content=body) if isinstance(body, bytes)
         else client.post("/api/generate", json=body))
    assert r.status_code == status and message in r.json()["error"]
    assert "\n" not in r.json()["error"]
    assert stream(client, {"run": "class", "steps": 2})[-1][0] == "done"


def test_play_without_a_run_or_on_a_taken_port_is_one_line(tmp_path):
    cmd = [sys.executable, "-m", "inkfuse.cli", "play"]
    proc = subprocess.run([*cmd, str(tmp_path / "none")], capture_output=True, text=True)
    assert proc.returncode == 1 and proc.stderr.count("\n") == 1, proc.stderr
    assert "inkfuse: error:" in proc.stderr
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = subprocess.run([*cmd, str(RUNS / "class"), "--port", str(port)],
                              capture_output=True, text=True)
    assert proc.returncode == 1 and proc.stderr.count("\n") == 1, proc.stderr
    assert f"cannot listen on 127.0.0.1:{port}" in proc.stderr
