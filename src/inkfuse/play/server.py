"""The playground's web app: FastAPI, a static page, and one streaming endpoint.

Why FastAPI + uvicorn with server-sent events: the page needs a few JSON endpoints and one
stream of events per generation, and the browser's own `fetch` reads a streamed response body,
so the app is one small module and the page plain JavaScript with no build step and no
framework to download (everything, page included, is served from the package: it works
offline). Gradio would give widgets for free but weighs tens of megabytes, owns the page's
layout and event loop, and streams through its own queue protocol; FastAPI and uvicorn are the
usual pair, small, and keep the engine (`engine.py`) free of any web library.

    GET  /             the page            GET /api/runs   the runs and their settings
    POST /api/generate a JSON request  ->  text/event-stream: start, step..., panel..., done
                       (or error / cancelled); a bad request is HTTP 400 {"error": one line},
                       a full queue 503. Closing the stream (the page's Cancel, or leaving)
                       cancels the generation at its next step.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, JSONResponse, Response, StreamingResponse
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool

from inkfuse.errors import InkfuseError
from inkfuse.play.engine import Busy, Playground

STATIC = Path(__file__).parent / "static"
ENDS = ("done", "error", "cancelled")


def create_app(playground: Playground) -> FastAPI:
    """The app serving `playground`; run it with uvicorn (see `inkfuse.cli.play`)."""
    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        playground.close()

    app = FastAPI(title="inkfuse playground", docs_url=None, redoc_url=None, openapi_url=None,
                  lifespan=lifespan)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/", include_in_schema=False)
    async def index() -> FileResponse:
        return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-store"})

    @app.get("/api/runs")
    async def runs() -> list[dict]:
        return playground.describe()

    @app.post("/api/generate")
    async def generate(request: Request) -> Response:
        try:
            body = await request.json()
        except ValueError:
            return JSONResponse({"error": "the request body must be JSON"}, status_code=400)
        try:  # image decoding takes a moment: off the event loop
            checked = await run_in_threadpool(playground.check, body)
        except InkfuseError as e:
            return JSONResponse({"error": str(e)}, status_code=400)
        loop, events = asyncio.get_running_loop(), asyncio.Queue()

        def emit(event: str, data: dict) -> None:  # from the worker thread
            if not loop.is_closed():
                loop.call_soon_threadsafe(events.put_nowait, (event, data))

        try:
            job = playground.submit(checked, emit)
        except Busy as e:
            return JSONResponse({"error": str(e)}, status_code=503)

        async def stream() -> AsyncIterator[str]:
            try:
                while True:
                    event, data = await events.get()
                    yield f"event: {event}\ndata: {json.dumps(data)}\n\n"
                    if event in ENDS:
                        return
            finally:  # finished, or the browser went away: stop at the next step
                job.cancel()

        return StreamingResponse(stream(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-store"})

    return app
