"""Issue 22, part 3: transfer against the honest classical baseline, per labelled-set size.

Each data set runs as one `exapt compare` panel (so every cell is an ordinary fit, the
splits are compare's, and the report's baseline sentence is exercised):

- tweets: the fixed files of ../shared/data/tweets (train_n{n}_s{seed}.csv, test.csv),
  n = 8, 16, 64, 256 (the largest file), `baseline` vs `linear-probe` and `lp-ft` on
  minilm-l6, every labelled tweet trained on (--val-fraction 0, as in docs/compare.md);
- amp-tm: `baseline` and `baseline-cnn` vs `linear-probe` on AntiBERTy, n = 8, 16, 64, all;
- promoters, splice: `baseline` and `baseline-cnn`; the transfer column is the best E. coli-pretrained
  encoder as published in docs/benchmarks.md and docs/pretrain.md (`ecoli-tiny-6mer`; at
  splice n = 64 the GPU-trained `ecoli-small-gpu`), measured by `pretrain_flagship.py` on
  the same compare cells (same seeds, same test split); those models are not installed
  by default (`pretrain_bench.py` makes them).

Elsewhere compare's default validation split (0.2), as pretrain_flagship.py ran its cells.
3 seeds; test accuracy, mean +- sd over seeds; max length 64 tokens. Writes benchmarks/results/baseline.json
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
    # every labelled tweet trains (no validation split), as in docs/compare.md's tweet panel
    "tweets": dict(data=str(TWEETS / "train_n{n}_s{seed}.csv"), test=str(TWEETS / "test.csv"), model="minilm-l6",
                   strategies="baseline,linear-probe,lp-ft", sizes="8,16,64,256", val_fraction=0.0),
    # baseline-cnn trains from random weights: 40 epochs with patience 10, as pretrain_flagship.py's cells
    "amp-tm": dict(data="amp-tm", model="antiberty", strategies="baseline,baseline-cnn,linear-probe",
                   sizes="8,16,64,all", epochs=40, patience=10),
    "promoters": dict(data="promoters", model="minilm-l6", strategies="baseline,baseline-cnn", sizes="8,16,32,all",
                      epochs=40, patience=10),
    # splice 'all' (~1,270 per class) takes a quarter of an hour per seed on one core; add it with --sizes
    "splice": dict(data="splice", model="minilm-l6", strategies="baseline,baseline-cnn", sizes="8,16,64",
                   epochs=40, patience=10),
}
# The best transfer published per size (docs/benchmarks.md, docs/pretrain.md): (strategy, model,
# mean, sd over 3 seeds), measured by pretrain_flagship.py on the same compare cells (splits)
PUBLISHED = {
    "splice": {8: ("linear-probe", "ecoli-tiny-6mer", 0.422, 0.041), 16: ("full", "ecoli-tiny-6mer", 0.372, 0.053),
               64: ("full", "ecoli-small-gpu", 0.819, 0.014)},
    "promoters": {8: ("full", "ecoli-tiny-6mer", 0.714, 0.140), 16: ("full", "ecoli-tiny-6mer", 0.794, 0.090),
                  32: ("full", "ecoli-tiny-6mer", 0.873, 0.059)},
}


def run_panel(name: str, panel: dict, seeds: int, work: Path) -> list[dict]:
    import exapt

    result = exapt.compare(panel["data"], model=panel["model"], strategies=panel["strategies"],
                           n_per_class=panel["sizes"], seeds=seeds, out=work / name, test=panel.get("test"),
                           max_length=64, max_test=2000, val_fraction=panel.get("val_fraction", 0.2), epochs=panel.get("epochs"),
                           patience=panel.get("patience", 5), tracking=False,
                           progress=False, log=lambda *a, **k: None)
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
    classical, transfer = {}, {}
    for r in cells:
        (classical if r["strategy"].startswith("baseline") else transfer).setdefault(r["n"], []).append(r)
    lines = [f"**{name}** (test accuracy, mean +- sd over seeds)", "",
             "| n per class | `baseline` | `baseline-cnn` | best transfer | best transfer - best baseline |",
             "|---|---|---|---|---|"]
    for n in sizes:
        by = {r["strategy"]: r for r in classical.get(n, [])}
        b = max(classical.get(n, []), key=lambda r: r["mean"], default=None)
        if n in transfer:
            t = max(transfer[n], key=lambda r: r["mean"])
            best = (f"{t['strategy']} ({t['model']}): {t['mean']:.3f} +- {t['sd']:.3f}", t["mean"])
        elif name in PUBLISHED and str(n).isdigit() and int(n) in PUBLISHED[name]:
            s, model, m, sd = PUBLISHED[name][int(n)]
            best = (f"{s} ({model}, published): {m:.3f} +- {sd:.3f}", m)
        else:
            best = ("-", None)
        diff = f"{(best[1] - b['mean']) * 100:+.1f}" if b and best[1] is not None else "-"
        shown = [f"{by[s]['mean']:.3f} +- {by[s]['sd']:.3f}" if s in by else "-" for s in ("baseline", "baseline-cnn")]
        lines.append(f"| {n} | {shown[0]} | {shown[1]} | {best[0]} | {diff} |")
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
