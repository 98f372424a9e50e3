"""Issue 4 targets for `exapt compare`, measured.

1. Wall time: one `exapt compare` panel vs. the same cells run one by one with
   `exapt fit` (one process per cell, as a user would script it). Both start from an
   empty feature cache; the one-by-one runs share theirs, as they would by default.
   Every cell's test accuracy must agree between the two (the same experiments).
2. Accuracy: `exapt compare` on the fixed tweet splits (pre-made files, 3 seeds,
   n = 8, 16, 64), and the strategy it recommends against the best peer of
   ../shared/peers/RESULTS.md.

    python benchmarks/compare_bench.py [--only wall|accuracy]
Run it alone: two heavy jobs on 2 cores distort every timing.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import RESULTS, TWEETS, machine, write_json

EXAPT = str(Path(sys.executable).with_name("exapt"))
WALL_PANEL = {"strategies": "linear-probe,freeze:4,lp-ft,scratch", "sizes": "8,16", "seeds": 2}
COMMON = ["--max-length", "64", "--max-test", "500"]
PEERS = {8: ("SetFit", 0.536), 16: ("SetFit / scikit-learn probe", 0.574), 64: ("scikit-learn probe (C=1)", 0.628)}
PEER_NAMES = {"setfit": "SetFit", "sklearn-probe": "scikit-learn probe (C=1)", "trainer-full": "Hugging Face Trainer"}


def peer_bars() -> dict:
    """The bar per size: the best of the published figures (PEERS) and the peers as run
    here by accuracy_tweets.py (SetFit reaches more on this machine than published)."""
    import pandas as pd

    bars = {n: (f"{name} (published)", bar) for n, (name, bar) in PEERS.items()}
    path = RESULTS / "accuracy_tweets.csv"
    if path.exists():
        frame = pd.read_csv(path)
        frame = frame[frame["tool"] == "peer"]
        for (method, n), g in frame.groupby(["method", "n"]):
            if n in bars and g["seed"].nunique() == 3 and g["accuracy"].mean() > bars[n][1]:
                bars[n] = (f"{PEER_NAMES.get(method, method)} (run here)", round(float(g["accuracy"].mean()), 4))
    return bars


def _timed(cmd: list[str], env: dict) -> float:
    started = time.perf_counter()
    subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - started


def wall(work: Path) -> dict:
    import pandas as pd

    strategies = WALL_PANEL["strategies"].split(",")
    sizes = [int(s) for s in WALL_PANEL["sizes"].split(",")]
    env = dict(os.environ, EXAPT_CACHE=str(work / "cache-fit"))
    one_by_one, cells = 0.0, {}
    for strategy in strategies:
        for n in sizes:
            for seed in range(WALL_PANEL["seeds"]):
                out = work / "fit" / f"{strategy.replace(':', '')}-n{n}-s{seed}"
                seconds = _timed([EXAPT, "fit", "tweets", "--strategy", strategy, "--n-per-class", str(n),
                                  "--seed", str(seed), "--out", str(out), "--quiet", *COMMON], env)
                one_by_one += seconds
                accuracy = json.loads((out / "metrics.json").read_text())["test"]["accuracy"]
                cells[(strategy, n, seed)] = {"fit_seconds": round(seconds, 2), "fit_accuracy": accuracy}
                print(f"fit {strategy} n={n} seed={seed}: {seconds:.1f} s, accuracy {accuracy:.4f}", flush=True)
    env = dict(os.environ, EXAPT_CACHE=str(work / "cache-compare"))
    compare_seconds = _timed([EXAPT, "compare", "tweets", "--strategies", WALL_PANEL["strategies"],
                              "--n-per-class", WALL_PANEL["sizes"], "--seeds", str(WALL_PANEL["seeds"]),
                              "--out", str(work / "compare"), "--quiet", *COMMON], env)
    frame = pd.read_csv(work / "compare" / "results.csv")
    mismatches = 0
    for row in frame.itertuples():
        cell = cells[(row.strategy, row.n, row.seed)]
        cell["compare_accuracy"] = row.test_accuracy
        cell["compare_cell_seconds"] = row.cell_seconds
        mismatches += abs(cell["fit_accuracy"] - row.test_accuracy) > 1e-9
    result = {"panel": WALL_PANEL, "options": COMMON, "one_by_one_seconds": round(one_by_one, 1),
              "compare_seconds": round(compare_seconds, 1), "ratio": round(compare_seconds / one_by_one, 3),
              "cells": len(cells), "accuracy_mismatches": int(mismatches),
              "per_cell": [{"strategy": s, "n": n, "seed": seed, **v} for (s, n, seed), v in cells.items()]}
    print(f"compare {compare_seconds:.1f} s vs one by one {one_by_one:.1f} s = {result['ratio']:.2f}x; "
          f"{mismatches} accuracy mismatches", flush=True)
    return result


def accuracy(out: Path, strategies: str) -> dict:
    """compare on the fixed splits; the recommended strategy vs. the best peer."""
    import pandas as pd

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
    cmd = [EXAPT, "compare", str(TWEETS / "train_n{n}_s{seed}.csv"), "--test", str(TWEETS / "test.csv"),
           "--strategies", strategies, "--n-per-class", "8,16,64", "--seeds", "3", "--val-fraction", "0",
           "--max-length", "64", "--out", str(out)]
    started = time.perf_counter()
    subprocess.run(cmd, check=True)
    seconds = time.perf_counter() - started
    frame = pd.read_csv(out / "results.csv")
    from exapt.compare.recommendation import recommend

    best = recommend(frame, "accuracy", True)["strategy"]
    means = frame.groupby(["strategy", "n"])["test_accuracy"].mean()
    rows = []
    for n, (peer, bar) in peer_bars().items():
        ours = float(means[(best, n)])
        # the peers' figures are published to 3 decimals: a margin under half a unit of the
        # last digit is a tie at their precision, not a win
        rows.append({"n": n, "recommended": best, "accuracy": round(ours, 4), "best_peer": peer,
                     "peer_accuracy": bar, "margin": round(ours - bar, 4), "beats": ours - bar >= 0.0005})
        print(f"n={n}: {best} {ours:.4f} vs {peer} {bar:.3f}", flush=True)
    shown = ["exapt"] + [c.replace(str(TWEETS), "../shared/data/tweets") for c in cmd[1:]]
    return {"command": " ".join(f"'{c}'" if "{" in c else c for c in shown), "seconds": round(seconds, 1), "recommended": best, "by_n": rows,
            "means": {f"{s}@{n}": round(float(v), 4) for (s, n), v in means.items()}}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--only", choices=["wall", "accuracy"])
    parser.add_argument("--strategies", default="linear-probe,lp-ft,full,scratch")
    args = parser.parse_args()
    path = RESULTS / "compare.json"
    result = json.loads(path.read_text()) if path.exists() else {}
    result["machine"] = machine()
    if args.only in (None, "wall"):
        work = Path(tempfile.mkdtemp(prefix="exapt-compare-bench-"))
        try:
            result["wall"] = wall(work)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    if args.only in (None, "accuracy"):
        out = RESULTS / "runs" / "compare-tweets"
        result["accuracy"] = accuracy(out, args.strategies)
    write_json(path, result)
    (RESULTS / "compare.md").write_text(_markdown(result))


def _markdown(result: dict) -> str:
    lines = []
    if "wall" in result:
        w = result["wall"]
        p = w["panel"]
        lines += [f"Panel: `{p['strategies']}` x n = {p['sizes']} x {p['seeds']} seeds on the built-in tweets "
                  f"({' '.join(w['options'])}), {w['cells']} cells.", "",
                  "| | wall seconds |", "|---|---:|",
                  f"| the cells one by one with `exapt fit` (one process each) | {w['one_by_one_seconds']:.1f} |",
                  f"| one `exapt compare` (MLflow tracking and report included) | {w['compare_seconds']:.1f} |",
                  f"| **ratio** (goal <= 0.8) | **{w['ratio']:.2f}x** |", "",
                  f"Test accuracy differs between the two in {w['accuracy_mismatches']} of {w['cells']} cells "
                  "(the same experiments).", ""]
    if "accuracy" in result:
        a = result["accuracy"]
        lines += [f"`exapt compare` on the fixed splits recommends **{a['recommended']}**:", "",
                  "| n per class | recommended strategy | best peer | peer accuracy | margin | above the bar |",
                  "|---:|---:|---|---:|---:|---|"]
        for r in a["by_n"]:
            verdict = "yes" if r["beats"] else ("tie at the peer's 3-decimal precision" if r["margin"] >= 0 else "no")
            lines.append(f"| {r['n']} | {r['accuracy']:.4f} | {r['best_peer']} | {r['peer_accuracy']:.3f} | "
                         f"{r['margin']:+.4f} | {verdict} |")
        strategies = sorted({k.split('@')[0] for k in a["means"]})
        lines += ["", "Mean accuracy over the 3 seeds, every strategy of the panel:", "",
                  "| strategy | n=8 | n=16 | n=64 |", "|---|---:|---:|---:|"]
        for s_ in strategies:
            lines.append(f"| {s_} | " + " | ".join(f"{a['means'].get(f'{s_}@{n}', float('nan')):.4f}"
                                                  for n in (8, 16, 64)) + " |")
        lines += ["", f"```bash\n{a['command']}\n```"]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
