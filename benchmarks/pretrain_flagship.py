"""Issue 8 flagship: a DNA encoder pre-trained on the E. coli genome, transferred to
splice junctions (3,186 primate sequences, n/ei/ie) and promoters (106 E. coli
sequences, +/-), against its scratch twin (same architecture, random weights).

Pre-training (once; ~25 min each on 2 cores, see docs/pretrain.md):
    exapt pretrain ecoli --kmer 6 --max-length 64 --batch-size 128 --steps 1000 \
        --out benchmarks/results/models/ecoli-tiny-6mer
    exapt pretrain ecoli --steps 1500 --out benchmarks/results/models/ecoli-tiny
Then:
    python benchmarks/pretrain_flagship.py [--model FOLDER] [--data splice,promoters]
Proteins (AntiBERTy, and a tiny encoder pre-trained on 20,000 UniProt proteins):
    exapt pretrain uniprot --steps 400 --out benchmarks/results/models/uniprot-tiny
    python benchmarks/pretrain_flagship.py --model antiberty --data amp-tm --lr default
    python benchmarks/pretrain_flagship.py --model benchmarks/results/models/uniprot-tiny --data amp-tm

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

SIZES = {"splice": "8,16,32,64", "promoters": "8,16,32", "amp-tm": "8,16,32,64", "amp-uniprot": "8,16,32,64"}
TARGET = 0.05


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=str(RESULTS / "models" / "ecoli-tiny-6mer"))
    ap.add_argument("--data", default="splice,promoters")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--lr", default="0.001", help="for full and scratch; 'default' keeps each strategy's own")
    ap.add_argument("--strategies", default="linear-probe,full,scratch")
    ap.add_argument("--sizes", help="n per class, comma-separated (default: per data set, see SIZES)")
    args = ap.parse_args()
    from exapt.compare import compare

    model = Path(args.model)  # a folder, or an alias such as antiberty
    summary = {"model": str(model), "machine": machine(), "data": {}}
    for data in args.data.split(","):
        out = RESULTS / "runs" / f"flagship-{data}-{model.name}"
        overrides = () if args.lr == "default" else (f"train.lr={args.lr}",)
        cmp = compare(data, str(model), args.strategies, args.sizes or SIZES[data], args.seeds, out, max_length=64,
                      epochs=40, patience=10, overrides=overrides, tracking=False, progress=False)
        import pandas as pd

        df = pd.read_csv(out / "results.csv")
        rows = {}
        for (strategy, n), g in df.groupby(["strategy", "n"]):
            rows.setdefault(str(n), {})[strategy] = {"mean": g["test_accuracy"].mean(),
                                                     "sd": statistics.pstdev(g["test_accuracy"]),
                                                     "seeds": g.sort_values("seed")["test_accuracy"].tolist()}
        for n, by in rows.items():
            line = f"{data} n={n}: " + ", ".join(f"{s} {v['mean']:.3f}" for s, v in by.items())
            if "scratch" in by and len(by) > 1:
                best = max((s for s in by if s != "scratch"), key=lambda s: by[s]["mean"])
                by["gain_over_scratch"] = {"strategy": best,
                                           "points": 100 * (by[best]["mean"] - by["scratch"]["mean"])}
                line += f" -> {best} - scratch = {by['gain_over_scratch']['points']:+.1f} points"
            print(line, flush=True)
        summary["data"][data] = {"by_n": rows, "report": str(out / "report.html"),
                                 "recommendation": json.loads(json.dumps(cmp.recommendation, default=str))}
    write_json(RESULTS / f"pretrain_flagship_{model.name}.json", summary)
    lines = []
    for data, d in summary["data"].items():
        strategies = [s for s in next(iter(d["by_n"].values())) if s != "gain_over_scratch"]
        lines += [f"**{data}**, model `{model.name}` (test accuracy, mean +- sd over {args.seeds} seeds)", "",
                  "| n per class | " + " | ".join(strategies) + " | best - scratch |",
                  "|---" * (len(strategies) + 2) + "|"]
        for n, by in sorted(d["by_n"].items(), key=lambda kv: int(kv[0])):
            gain = by.get("gain_over_scratch")
            lines.append(f"| {n} | " + " | ".join(f"{by[s]['mean']:.3f} +- {by[s]['sd']:.3f}" for s in strategies)
                         + (f" | {gain['points']:+.1f} ({gain['strategy']}) |" if gain else " | - |"))
        lines.append("")
    (RESULTS / f"pretrain_flagship_{model.name}.md").write_text("\n".join(lines))


if __name__ == "__main__":
    main()
