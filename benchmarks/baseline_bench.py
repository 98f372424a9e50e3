"""Issue 22, part 3: transfer against the honest classical baseline, per labelled-set size.

Each data set runs as one `exapt compare` panel (so every cell is an ordinary fit, the
splits are compare's, and the report's baseline sentence is exercised):

- tweets: the fixed files of ../shared/data/tweets (train_n{n}_s{seed}.csv, test.csv),
  n = 8, 16, 64, 256 (the largest file), `baseline` vs `linear-probe` on minilm-l6;
- amp-tm: `baseline` vs `linear-probe` on AntiBERTy, n = 8, 16, 64, all;
- promoters, splice: `baseline` alone; the transfer column is the E. coli-pretrained
  `ecoli-tiny-6mer` encoder's best strategy as published in docs/benchmarks.md, measured
  by `pretrain_flagship.py` on the same compare splits (same seeds, same test split);
  that model is not installed by default (`pretrain_bench.py` makes it).

3 seeds; test accuracy, mean +- sd over seeds. Writes benchmarks/results/baseline.json
and baseline.md.

    OMP_NUM_THREADS=1 python benchmarks/baseline_bench.py [--data tweets,amp-tm,promoters,splice]
"""
from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from common import RESULTS, TWEETS, machine, write_json

PANELS = {
    "tweets": dict(data=str(TWEETS / "train_n{n}_s{seed}.csv"), test=str(TWEETS / "test.csv"), model="minilm-l6",
                   strategies="baseline,linear-probe", sizes="8,16,64,256"),
    "amp-tm": dict(data="amp-tm", model="antiberty", strategies="baseline,linear-probe", sizes="8,16,64,all"),
    "promoters": dict(data="promoters", model="minilm-l6", strategies="baseline", sizes="8,16,32,all"),
    # splice 'all' (~1,270 per class) takes a quarter of an hour per seed on one core; add it with --sizes
    "splice": dict(data="splice", model="minilm-l6", strategies="baseline", sizes="8,16,64"),
}
# docs/benchmarks.md, "E. coli-pretrained DNA encoder": best strategy per size of ecoli-tiny-6mer
# (mean, sd over 3 seeds), the same compare cells (splits) as the baseline's here
PUBLISHED = {
    "splice": {8: ("linear-probe", 0.422, 0.041), 16: ("full", 0.372, 0.053), 64: ("linear-probe", 0.428, 0.005)},
    "promoters": {8: ("full", 0.714, 0.140), 16: ("full", 0.794, 0.090), 32: ("full", 0.873, 0.059)},
}


def run_panel(name: str, panel: dict, seeds: int, work: Path) -> list[dict]:
    import exapt

    result = exapt.compare(panel["data"], model=panel["model"], strategies=panel["strategies"],
                           n_per_class=panel["sizes"], seeds=seeds, out=work / name, test=panel.get("test"),
                           max_length=64, max_test=2000, tracking=False, progress=False, log=lambda *a, **k: None)
    rows = []
    frame = result.results
    for (strategy, label), g in frame.groupby(["strategy", "n_label"], sort=False):
        acc = g.sort_values("seed")["test_accuracy"]
        rows.append({"data": name, "strategy": strategy, "model": panel["model"] if strategy != "baseline"
                     else "classical", "n": label, "n_train": int(g["n_train"].iloc[0] + g["n_val"].iloc[0]),
                     "mean": round(float(acc.mean()), 4), "sd": round(float(acc.std(ddof=1)), 4) if len(acc) > 1
                     else 0.0, "seeds": [round(float(a), 4) for a in acc], "seconds": round(float(g["cell_seconds"].sum()), 1)})
    classical = result.recommendation.get("classical") or {}
    rows.append({"data": name, "recommendation": result.recommendation.get("strategy"),
                 "baseline_sentence": classical.get("sentence", "")})
    return rows


def table(name: str, rows: list[dict]) -> list[str]:
    cells = [r for r in rows if r["data"] == name and "strategy" in r]
    sizes = list(dict.fromkeys(r["n"] for r in cells))
    base = {r["n"]: r for r in cells if r["strategy"] == "baseline"}
    transfer = {}
    for r in cells:
        if r["strategy"] != "baseline":
            transfer.setdefault(r["n"], []).append(r)
    lines = [f"**{name}** (test accuracy, mean +- sd over seeds)", "",
             "| n per class | classical baseline | best transfer | transfer - baseline |", "|---|---|---|---|"]
    for n in sizes:
        b = base.get(n)
        if n in transfer:
            t = max(transfer[n], key=lambda r: r["mean"])
            best = (f"{t['strategy']} ({t['model']}): {t['mean']:.3f} +- {t['sd']:.3f}", t["mean"])
        elif name in PUBLISHED and str(n).isdigit() and int(n) in PUBLISHED[name]:
            s, m, sd = PUBLISHED[name][int(n)]
            best = (f"{s} (ecoli-tiny-6mer, published): {m:.3f} +- {sd:.3f}", m)
        else:
            best = ("-", None)
        diff = f"{(best[1] - b['mean']) * 100:+.1f}" if b and best[1] is not None else "-"
        shown = f"{b['mean']:.3f} +- {b['sd']:.3f}" if b else "-"
        lines.append(f"| {n} | {shown} | {best[0]} | {diff} |")
    extra = [r for r in rows if r["data"] == name and "baseline_sentence" in r]
    if extra and extra[0]["baseline_sentence"]:
        lines += ["", f"compare's report: {extra[0]['baseline_sentence']}"]
    return lines + [""]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=",".join(PANELS))
    ap.add_argument("--seeds", type=int, default=3)
    args = ap.parse_args()
    names = [d.strip() for d in args.data.split(",") if d.strip()]
    out_json = RESULTS / "baseline.json"
    previous = json.loads(out_json.read_text())["rows"] if out_json.exists() else []
    rows = [r for r in previous if r["data"] not in names]
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            rows += run_panel(name, PANELS[name], args.seeds, Path(tmp))
            write_json(out_json, {"machine": machine(), "seeds": args.seeds, "rows": rows})
    order = [n for n in PANELS if any(r["data"] == n for r in rows)]
    md = ["# Transfer vs the classical baseline (issue 22)", "",
          "`OMP_NUM_THREADS=1 python benchmarks/baseline_bench.py`", ""]
    for name in order:
        md += table(name, rows)
    (RESULTS / "baseline.md").write_text("\n".join(md))
    print("\n".join(md))


if __name__ == "__main__":
    main()
