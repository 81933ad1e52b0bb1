"""`inkfuse play`: the playground in the browser, on this machine.

    inkfuse play runs/demo runs/text              # http://127.0.0.1:8000
    inkfuse play runs/demo --host 0.0.0.0 --port 9000

Needs the `play` extra (`pip install 'inkfuse[play]'`: FastAPI and uvicorn); the page and all
its assets are served by the app, so it works offline. What it does is `inkfuse.play`.
"""

from __future__ import annotations

import argparse
import socket
import threading
from typing import Any

from inkfuse.cli.args import existing_run, number
from inkfuse.errors import ConfigError


def add_parser(subparsers: Any) -> None:
    """Register `play` on the main parser's subparsers."""
    pl = subparsers.add_parser(
        "play", help="a playground in the browser: prompt, guidance, sampler, live steps",
        description="Serve a web page for sampling from runs: watch x_t and the predicted x0 "
                    "step by step, compare samplers or guidance weights from the same noise, "
                    "inpaint and img2img. Needs `pip install 'inkfuse[play]'`.")
    pl.add_argument("run_dirs", nargs="+", metavar="RUN", type=existing_run)
    pl.add_argument("--host", default="127.0.0.1",
                    help="address to listen on (default 127.0.0.1: this machine only)")
    pl.add_argument("--port", action=number(int, lo=0, hi=65535), default=8000,
                    help="port (default 8000; 0 = any free port)")
    pl.add_argument("--device", default="cpu", help="cpu or cuda")
    pl.set_defaults(fn=play)


def play(args: argparse.Namespace) -> None:
    try:
        import uvicorn

        from inkfuse.play.server import create_app
    except ImportError as e:
        raise ConfigError(f"the playground needs the play extra ({e.name} is missing): "
                          "pip install 'inkfuse[play]'") from None
    from inkfuse.play.engine import Playground

    sock = _listen(args.host, args.port)  # before loading runs: a taken port fails at once
    # the network runs on this (the main) thread, the web app on another (see engine.py)
    playground = Playground(args.run_dirs, device=args.device, model_thread=False)
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    server = uvicorn.Server(uvicorn.Config(create_app(playground), log_level="warning",
                                           timeout_graceful_shutdown=1))
    def serve_web() -> None:
        try:
            server.run(sockets=[sock])
        finally:  # the web app stopped (or never started): so does the model loop below
            playground.model.stop()

    web = threading.Thread(target=serve_web, name="inkfuse-web")
    web.start()
    print(f"inkfuse playground on http://{shown}:{port} serving {', '.join(playground.runs)} "
          "(Ctrl-C stops it)", flush=True)
    try:
        playground.model.serve()  # until Ctrl-C, SIGTERM or the web app stops
    finally:
        server.should_exit = True
        web.join(10)
        sock.close()


def _listen(host: str, port: int) -> socket.socket:
    """A bound socket on host:port, or a one-line error naming what is wrong."""
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
    except socket.gaierror:
        raise ConfigError(f"--host {host!r} is not an address of this machine; use 127.0.0.1 "
                          "or 0.0.0.0") from None
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as e:
        sock.close()
        raise ConfigError(f"cannot listen on {host}:{port} ({e.strerror}); pick another "
                          "--port, or stop what uses it") from None
    sock.listen(128)
    return sock
