"""Issue 23 targets for `--executor ray`, measured (docs/scale.md).

1. Equality: a 16-cell tweet panel (MiniLM-L6 linear probe, n=8 per class, 16 seeds) on a
   local Ray cluster of 2 workers x 1 CPU gives cell for cell the accuracies of the local run.
2. Wall time of that panel: 2 workers x 1 thread against 1 worker x 2 threads (a ratio),
   and the local run (one process, 2 threads) beside them.
3. Panel time against cells (4 / 8 / 16) and workers (1 / 2, 1 CPU each), fitted to
       T = start + overhead * cells + cell * cells / workers
   (start: the cluster, the model and the frozen-feature cache, once per node; overhead:
   the driver's per-cell work; cell: one cell's own time), with what it predicts for 64
   workers. Every Ray point starts its own cluster with an empty feature cache.

    python benchmarks/scale_bench.py [--quick] [--strategy full --epochs 2]
--quick: 150 test tweets (50 per class), 32 tokens. Run it alone: two heavy jobs on 2
cores distort every timing; figures taken beside other work are not final.
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from common import RESULTS, TWEETS, machine, write_json

CELLS = (4, 8, 16)
WORKERS = (1, 2)


def _quiet(*_a, **_k) -> None:
    pass


def test_file(work: Path, per_class: int | None) -> Path:
    """The fixed tweet test split, or its first `per_class` tweets of each class (--quick)."""
    if per_class is None:
        return TWEETS / "test.csv"
    import pandas as pd

    path = work / f"test-{per_class}.csv"
    pd.read_csv(TWEETS / "test.csv").groupby("label").head(per_class).to_csv(path, index=False)
    return path


def panel(work: Path, name: str, cells: int, executor: str, opts: dict, strategy: str) -> tuple[float, dict]:
    """One panel of `cells` seeds in a fresh folder and a fresh feature cache: (seconds, accuracies)."""
    import exapt

    os.environ["EXAPT_CACHE"] = str(work / f"cache-{name}")   # read by the workers a new cluster starts
    started = time.perf_counter()
    result = exapt.compare(str(TWEETS / "train_n256_s0.csv"), "minilm-l6", strategies=strategy,
                           n_per_class="8", seeds=cells, out=work / name, tracking=False, progress=False, log=_quiet,
                           executor=executor, **opts)
    seconds = time.perf_counter() - started
    return seconds, dict(zip(result.results["cell"], result.results["test_accuracy"]))


def fit_model(points: list[dict]) -> dict:
    """Non-negative least squares of T = start + overhead * cells + cell * cells / workers on
    the points (a negative time would be noise, not a cost). `holds`: every point within 20 %."""
    from scipy.optimize import nnls

    x = np.array([[1.0, p["cells"], p["cells"] / p["workers"]] for p in points])
    y = np.array([p["seconds"] for p in points])
    coef, _ = nnls(x, y)
    start, overhead, cell = (float(c) for c in coef)
    error = float(np.max(np.abs(x @ coef - y) / y))
    model = {"start_s": round(start, 2), "overhead_per_cell_s": round(overhead, 3), "cell_s": round(cell, 2),
             "max_relative_error": round(error, 3), "holds": error <= 0.2}
    # more workers than cells leave workers idle: a panel takes at least one cell's time
    model["predicted_s"] = {f"{c} cells, {w} workers": round(start + overhead * c + cell * c / min(w, c), 1)
                            for c in (16, 64, 1024) for w in (2, 64)}
    return model


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="150 test tweets (50 per class), 32 tokens")
    ap.add_argument("--strategy", default="linear-probe",
                    help="each cell's strategy; `full` with --epochs 2 makes cells that cost seconds, not the start")
    ap.add_argument("--epochs", type=int, help="epochs per cell (default: the strategy's)")
    args = ap.parse_args()
    name = "scale" + ("-quick" if args.quick else "") + ("" if args.strategy == "linear-probe" else f"-{args.strategy}")
    with tempfile.TemporaryDirectory(prefix="exapt-scale-") as tmp:
        work = Path(tmp)
        opts = {"test": str(test_file(work, 50 if args.quick else None)), "max_length": 32 if args.quick else 64}
        if args.epochs:
            opts["epochs"] = args.epochs
        local_s, local = panel(work, "local", 16, "local", opts, args.strategy)
        print(f"local, 1 process x 2 threads: 16 cells in {local_s:.1f} s")
        points = []
        for workers in WORKERS:
            for cells in CELLS:
                seconds, acc = panel(work, f"ray-{workers}x1-{cells}", cells, f"ray,workers={workers},cpus=1", opts,
                                    args.strategy)
                points.append({"cells": cells, "workers": workers, "seconds": round(seconds, 2)})
                print(f"ray {workers} worker(s) x 1 thread: {cells} cells in {seconds:.1f} s")
                if cells == 16 and workers == 2:
                    on_ray = acc
        one_by_two, _ = panel(work, "ray-1x2-16", 16, "ray,workers=1,cpus=2", opts, args.strategy)
        print(f"ray 1 worker x 2 threads: 16 cells in {one_by_two:.1f} s")
    differ = {c: (local[c], on_ray.get(c)) for c in local if on_ray.get(c) != local[c]}
    two_by_one = next(p["seconds"] for p in points if p["cells"] == 16 and p["workers"] == 2)
    report = {"quick": args.quick, "strategy": args.strategy, "options": {**opts, "test": Path(opts["test"]).name}, "machine": machine(),
              "equality": {"cells": len(local), "equal": not differ and len(on_ray) == len(local), "differ": differ,
                           "mean_test_accuracy": round(float(np.mean(list(local.values()))), 4)},
              "wall_16_cells_s": {"local_1x2": round(local_s, 2), "ray_2x1": two_by_one, "ray_1x2": round(one_by_two, 2)},
              "ratio_2x1_over_1x2": round(two_by_one / one_by_two, 3), "points": points, "model": fit_model(points)}
    write_json(RESULTS / f"{name}.json", report)
    print(report["equality"], report["ratio_2x1_over_1x2"], report["model"])


if __name__ == "__main__":
    main()
