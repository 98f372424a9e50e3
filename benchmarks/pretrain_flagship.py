"""Issue 8 flagship: a DNA encoder pre-trained on the E. coli genome, transferred to
splice junctions (3,186 primate sequences, n/ei/ie) and promoters (106 E. coli
sequences, +/-), against its scratch twin (same architecture, random weights).

Pre-training (once; ~25 min each on 2 cores, see docs/pretrain.md):
    exapt pretrain ecoli --kmer 6 --max-length 64 --batch-size 128 --steps 1000 \
        --out benchmarks/results/models/ecoli-tiny-6mer
    exapt pretrain ecoli --steps 1500 --out benchmarks/results/models/ecoli-tiny
Then:
    python benchmarks/pretrain_flagship.py [--model FOLDER] [--data splice,promoters]

Each data set runs one `exapt compare` panel: linear-probe, full and scratch at n = 8,
16, 32, 64 per class (promoters: 8, 16, 32; it has 53 per class) x 3 seeds, max length 64
tokens, learning rate 1e-3 for full and scratch alike (chosen on one seed of the
single-base model at n = 64; the default 5e-5 barely moves a 0.9 M-parameter encoder),
up to 40 epochs with patience 10. Target: full (or linear-probe) beats scratch on splice
at n = 64 per class by >= 5 accuracy points (mean over 3 seeds).
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

from common import RESULTS, machine, write_json

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

SIZES = {"splice": "8,16,32,64", "promoters": "8,16,32"}
TARGET = 0.05


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=str(RESULTS / "models" / "ecoli-tiny-6mer"))
    ap.add_argument("--data", default="splice,promoters")
    ap.add_argument("--seeds", type=int, default=3)
    args = ap.parse_args()
    from exapt.compare import compare

    model = Path(args.model)
    summary = {"model": str(model), "machine": machine(), "data": {}}
    for data in args.data.split(","):
        out = RESULTS / "runs" / f"flagship-{data}-{model.name}"
        cmp = compare(data, str(model), "linear-probe,full,scratch", SIZES[data], args.seeds, out, max_length=64,
                      epochs=40, patience=10, overrides=("train.lr=0.001",), tracking=False, progress=False)
        import pandas as pd

        df = pd.read_csv(out / "results.csv")
        rows = {}
        for (strategy, n), g in df.groupby(["strategy", "n"]):
            rows.setdefault(str(n), {})[strategy] = {"mean": g["test_accuracy"].mean(),
                                                     "sd": statistics.pstdev(g["test_accuracy"]),
                                                     "seeds": g.sort_values("seed")["test_accuracy"].tolist()}
        for n, by in rows.items():
            best = max((s for s in by if s != "scratch"), key=lambda s: by[s]["mean"])
            by["gain_over_scratch"] = {"strategy": best, "points": 100 * (by[best]["mean"] - by["scratch"]["mean"])}
            print(f"{data} n={n}: " + ", ".join(f"{s} {v['mean']:.3f}" for s, v in by.items() if s != "gain_over_scratch")
                  + f" -> {best} - scratch = {by['gain_over_scratch']['points']:+.1f} points", flush=True)
        summary["data"][data] = {"by_n": rows, "report": str(out / "report.html"),
                                 "recommendation": json.loads(json.dumps(cmp.recommendation, default=str))}
    write_json(RESULTS / f"pretrain_flagship_{model.name}.json", summary)


if __name__ == "__main__":
    main()
