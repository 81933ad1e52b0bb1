"""Load on the playground: 8 clients generating at once, on loopback, against a real
`inkfuse play` server (its own process, as a user starts it), plus one client alone.

    python benchmarks/play_load.py runs/demo [--clients 8] [--requests 3]

Reports, for one client alone, the time from submitting to the first streamed preview and to the
final image (a 50-step grid of 16, the page's default), and for `--clients` at once every
request's outcome and the percentiles of both times. Writes benchmarks/results/play_load.md.
Needs the play extra and httpx (`pip install -e '.[play,browser]'`). Run it on a quiet machine.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx

OUT = Path(__file__).parent / "results" / "play_load.md"


def one(client: httpx.Client, url: str, body: dict) -> dict:
    """One generation: (ok, ms to the first step event, ms to the end, model calls)."""
    t0 = time.perf_counter()
    first = None
    end, nfe = None, 0
    with client.stream("POST", f"{url}/api/generate", json=body, timeout=600) as r:
        if r.status_code != 200:
            return {"ok": False, "why": r.read().decode()[:200]}
        name = None
        for line in r.iter_lines():
            if line.startswith("event: "):
                name = line[7:]
                if name == "step" and first is None:
                    first = (time.perf_counter() - t0) * 1000
            elif line.startswith("data: ") and name in ("panel", "done", "error", "cancelled"):
                data = json.loads(line[6:])
                if name == "panel":
                    nfe = data["nfe"]
                elif name != "done":
                    return {"ok": False, "why": f"{name}: {data}"}
                else:
                    end = (time.perf_counter() - t0) * 1000
    return {"ok": end is not None, "first": first, "total": end, "nfe": nfe}


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, round(q / 100 * (len(values) - 1)))]


def row(label: str, results: list[dict]) -> str:
    ok = [r for r in results if r["ok"]]
    firsts, totals = [r["first"] for r in ok], [r["total"] for r in ok]
    cells = [label, f"{len(ok)}/{len(results)}"]
    for xs in (firsts, totals):
        cells += [f"{pct(xs, q):.0f}" for q in (50, 90, 99)] + [f"{max(xs):.0f}"]
    return "| " + " | ".join(cells) + " |"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run_dir")
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--requests", type=int, default=3, help="per client")
    ap.add_argument("--alone", type=int, default=10, help="requests of the single client")
    args = ap.parse_args()

    proc = subprocess.Popen([sys.executable, "-m", "inkfuse.cli", "play", args.run_dir,
                             "--port", "0"], stdout=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        url = re.search(r"http://\S+", line).group(0)
        run = httpx.get(f"{url}/api/runs").json()[0]
        grid = {"run": run["id"], "n": 16, "steps": 50, "sampler": "ddim"}
        single = {**grid, "n": 1}
        with httpx.Client() as c:
            one(c, url, {**grid, "steps": 2})  # warm-up: first-call costs are not the steady state
            alone_grid = [one(c, url, grid) for _ in range(args.alone)]
            alone_one = [one(c, url, single) for _ in range(args.alone)]
        crowd: list[dict] = []
        lock = threading.Lock()

        def client(k: int) -> None:
            with httpx.Client() as c:
                for j in range(args.requests):
                    r = one(c, url, {**grid, "seed": k * 100 + j})
                    with lock:
                        crowd.append(r)

        t0 = time.perf_counter()
        threads = [threading.Thread(target=client, args=(k,)) for k in range(args.clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wall = time.perf_counter() - t0
    finally:
        proc.terminate()
        proc.wait(30)

    failed = [r for r in crowd if not r["ok"]]
    lines = [
        f"`python benchmarks/play_load.py {args.run_dir}`: an `inkfuse play` server on loopback, "
        f"httpx clients streaming `POST /api/generate` (DDIM, 50 steps, CFG w = the recipe's; "
        f"a grid of 16 unless said). Times in ms from sending the request; 'first preview' is "
        f"the first streamed step.",
        "",
        "| clients | answered | first preview p50 | p90 | p99 | max | final image p50 | p90 "
        "| p99 | max |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        row("1, grid of 16", alone_grid),
        row("1, one image", alone_one),
        row(f"{args.clients} at once × {args.requests} each", crowd),
        "",
        f"{args.clients} clients: {len(crowd) - len(failed)} of {len(crowd)} requests answered "
        f"in {wall:.1f} s ({len(crowd) * 16 / wall:.1f} images/s); model calls per request "
        f"{statistics.mean(r['nfe'] for r in crowd if r['ok']):.0f}.",
    ]
    if failed:
        lines.append(f"Failures: {failed[:3]}")
    OUT.parent.mkdir(exist_ok=True)
    OUT.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
