"""Quality against wall-clock training time, from the in-training scores of runs trained with
`train.eval_every` (their log.jsonl): one line per run, one plot per metric.

    inkfuse train mnist --set train.eval_every=500 --out runs/mnist-eval
    python benchmarks/quality_vs_time.py runs/mnist-eval runs/fashion-mnist-eval

The time axis is `train_seconds`: the run's training time across resumes, without the time the
scoring took. Writes results/quality_vs_time_<metric>.png for each metric and
results/quality_vs_time.md (the first, best and last score of each run), and prints the table.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from inkfuse import viz
from inkfuse.artifacts.log import LOG, read_log
from inkfuse.train.scoring import HIGHER_IS_BETTER

RESULTS = Path(__file__).parent / "results"


def scores(run_dir: Path) -> dict[str, list[tuple[float, int, float]]]:
    """{metric: [(training minutes, step, value), ...]} of a run's score records."""
    out: dict[str, list[tuple[float, int, float]]] = {}
    for record in read_log(run_dir / LOG):
        for name, value in record.get("eval", {}).items():
            if value is not None and "train_seconds" in record:
                out.setdefault(name, []).append((record["train_seconds"] / 60, record["step"],
                                                 value))
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("runs", nargs="+", type=Path, help="run dirs trained with train.eval_every")
    p.add_argument("--results", type=Path, default=RESULTS, help="where to write (default "
                   "benchmarks/results)")
    args = p.parse_args()

    found = {run: scores(run) for run in args.runs}
    empty = [str(run) for run, s in found.items() if not s]
    if empty:
        raise SystemExit(f"no in-training scores in {', '.join(empty)}: train with --set "
                         "train.eval_every=N")
    metrics = list(dict.fromkeys(m for s in found.values() for m in s))
    lines = ["# Quality vs training time", "",
             "In-training scores (`train.eval_every`, `train.eval_n` samples of the EMA weights, "
             "one fixed seed) against the training time in minutes (scoring excluded).", "",
             "| run | metric | first (min) | best (min) | last (min) | steps |",
             "|---|---|---:|---:|---:|---:|"]
    for metric in metrics:
        series = {}
        for run, s in found.items():
            points = s.get(metric)
            if not points:
                continue
            series[run.name] = ([m for m, _, _ in points], [v for _, _, v in points])
            pick = max if metric in HIGHER_IS_BETTER else min
            best = pick(points, key=lambda point: point[2])
            cells = [f"{v:.4g} ({m:.1f})" for m, _, v in (points[0], best, points[-1])]
            lines.append(f"| {run} | {metric} | {' | '.join(cells)} | {points[-1][1]} |")
        args.results.mkdir(parents=True, exist_ok=True)
        viz.plot_lines(series, args.results / f"quality_vs_time_{metric}.png",
                       xlabel="training minutes", ylabel=metric,
                       title=f"{metric} against training time")
    (args.results / "quality_vs_time.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
