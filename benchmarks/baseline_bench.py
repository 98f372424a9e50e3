"""Issue 22, part 3: transfer against the honest classical baseline, per labelled-set size.

Each data set runs as one `exapt compare` panel (so every cell is an ordinary fit, the
splits are compare's, and the report's baseline sentence is exercised):

- tweets: the fixed files of ../shared/data/tweets (train_n{n}_s{seed}.csv, test.csv),
  n = 8, 16, 64, 256 (the largest file), `baseline` vs `linear-probe` on minilm-l6, every
  labelled tweet trained on (--val-fraction 0, as in docs/compare.md); `lp-ft` on the same
  files and settings is read from results/accuracy_tweets.csv (n = 8, 16, 64; the same
  cells: seed 0 at n = 8 reproduces 0.4607 here) and docs/compare.md (n = 256, rank_bench.py),
  because its 12 cells take over an hour on one shared core;
- amp-tm: `baseline` and `baseline-cnn` vs `linear-probe` on AntiBERTy, n = 8, 16, 64, all
  (AntiBERTy's figures equal docs/benchmarks.md's to the digit: the same cells), and the
  published `full` fine-tuning of the UniProt-pretrained `uniprot-tiny` encoder;
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
                   strategies="baseline,linear-probe", sizes="8,16,64,256", val_fraction=0.0),
    # baseline-cnn trains from random weights: 40 epochs with patience 10, as pretrain_flagship.py's cells
    "amp-tm": dict(data="amp-tm", model="antiberty", strategies="baseline,baseline-cnn,linear-probe",
                   sizes="8,16,64,all", epochs=40, patience=10),
    "promoters": dict(data="promoters", model="minilm-l6", strategies="baseline,baseline-cnn", sizes="8,16,32,all",
                      epochs=40, patience=10),
    "splice": dict(data="splice", model="minilm-l6", strategies="baseline,baseline-cnn", sizes="8,16,64,all",
                   epochs=40, patience=10),
}
# The best transfer published per size (docs/benchmarks.md, docs/pretrain.md): (strategy, model,
# mean, sd over 3 seeds), measured by pretrain_flagship.py on the same compare cells (splits)
PUBLISHED = {
    "tweets": {256: ("lp-ft", "minilm-l6", 0.7078, 0.0010)},   # docs/compare.md: 0.7087 / 0.7080 / 0.7067
    "amp-tm": {8: ("full", "uniprot-tiny", 0.829, 0.030), 16: ("full", "uniprot-tiny", 0.894, 0.021),
               64: ("full", "uniprot-tiny", 0.947, 0.023)},
    "splice": {8: ("linear-probe", "ecoli-tiny-6mer", 0.422, 0.041), 16: ("full", "ecoli-tiny-6mer", 0.372, 0.053),
               64: ("full", "ecoli-small-gpu", 0.819, 0.014)},
    "promoters": {8: ("full", "ecoli-tiny-6mer", 0.714, 0.140), 16: ("full", "ecoli-tiny-6mer", 0.794, 0.090),
                  32: ("full", "ecoli-tiny-6mer", 0.873, 0.059)},
}


def published_lp_ft() -> None:
    """lp-ft on the fixed tweet files, per seed, from accuracy_tweets.py's results."""
    import pandas as pd

    path = RESULTS / "accuracy_tweets.csv"
    if not path.exists():
        return
    frame = pd.read_csv(path)
    frame = frame[(frame["tool"] == "exapt") & (frame["method"] == "lp-ft")]
    for n, g in frame.groupby("n"):
        if g["seed"].nunique() == 3:
            acc = g.sort_values("seed")["accuracy"]
            PUBLISHED["tweets"][int(n)] = ("lp-ft", "minilm-l6", float(acc.mean()), float(acc.std(ddof=1)))


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
             "| n per class | `baseline` | `baseline-cnn` | transfer, measured here | transfer, published | "
             "best transfer - best baseline |", "|---|---|---|---|---|---|"]
    for n in sizes:
        by = {r["strategy"]: r for r in classical.get(n, [])}
        b = max(classical.get(n, []), key=lambda r: r["mean"], default=None)
        here = [(f"{t['strategy']} ({t['model']}): {t['mean']:.3f} +- {t['sd']:.3f}", t["mean"])
                for t in transfer.get(n, [])]
        published = []
        if name in PUBLISHED and str(n).isdigit() and int(n) in PUBLISHED[name]:
            s, model, m, sd = PUBLISHED[name][int(n)]
            published.append((f"{s} ({model}): {m:.3f} +- {sd:.3f}", m))
        best = max(here + published, key=lambda o: o[1], default=("-", None))
        shown_here = max(here, key=lambda o: o[1], default=("-", None))[0]
        shown_published = published[0][0] if published else "-"
        diff = f"{(best[1] - b['mean']) * 100:+.1f}" if b and best[1] is not None else "-"
        shown = [f"{by[s]['mean']:.3f} +- {by[s]['sd']:.3f}" if s in by else "-" for s in ("baseline", "baseline-cnn")]
        lines.append(f"| {n} | {shown[0]} | {shown[1]} | {shown_here} | {shown_published} | {diff} |")
    extra = [r for r in rows if r["data"] == name and "baseline_sentence" in r]
    if extra and extra[0]["baseline_sentence"]:
        lines += ["", f"compare's report: {extra[0]['baseline_sentence']}"]
    return lines + [""]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=",".join(PANELS))
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--report", action="store_true", help="only rewrite baseline.md from baseline.json")
    ap.add_argument("--work", help="keep the compare folders here (default: a temporary folder); a rerun with "
                                   "the same folder reads finished cells back")
    args = ap.parse_args()
    published_lp_ft()
    names = [d.strip() for d in args.data.split(",") if d.strip()]
    out_json = RESULTS / "baseline.json"
    previous = json.loads(out_json.read_text())["rows"] if out_json.exists() else []
    rows = [r for r in previous if r["data"] not in names] if not args.report else previous
    with tempfile.TemporaryDirectory() as tmp:
        for name in ([] if args.report else names):
            rows += run_panel(name, PANELS[name], args.seeds, Path(args.work or tmp))
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
