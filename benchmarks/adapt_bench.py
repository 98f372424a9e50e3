"""Issue 6's adaptation targets, measured over 3 seeds with `exapt fit --adapt-to`.

1. MNIST -> 8x8 optdigits, no target labels: `mnist-8x8` (MNIST pooled the way optdigits
   was made) is the labelled source, `optdigits` the target; half of optdigits is its
   held-out test set, the other half the unlabelled rows the penalties see. The small
   `cnn` is trained from scratch with `full`, and the epoch is chosen on the *source*
   validation split (no target label is used anywhere). Target: dann or coral beats
   source-only target accuracy by at least 5 points.
2. Airline -> self-driving-car tweets (strong label shift: 63% negative vs 88% neutral):
   MiniLM `lp-ft` on 64 airline tweets per class, with and without importance weights,
   and with the label-shift correction (BBSE class weights), tested on half of the
   self-driving tweets (up to 2,000 rows).

Settings are fixed before looking at any target figure, except coral's weight (100):
the Deep CORAL loss of 128-256-d features is ~1e-4 at weight 1, too small to act; 100
was picked from one seed of a grid on the MLP version of pair 1 (a different backbone,
reported in docs/adaptation.md), so treat coral's figure as lightly tuned. dann runs
with its defaults.

    python benchmarks/adapt_bench.py              # ~40 min on 2 cores
    python benchmarks/adapt_bench.py --quick      # 1 seed, 3 epochs: a smoke test
Writes results/adapt.json and results/adapt.md.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, machine, write_json  # noqa: E402

DIGITS = {"source-only": [], "dann": ["dann"], "coral": ["coral:weight=100"], "mmd": ["mmd"],
          "importance-weights": ["importance-weights"]}
TWEETS = {"source-only": [], "importance-weights": ["importance-weights"], "label-shift": ["label-shift"]}


def fit(source, target, model, strategy, penalties, seed, out, **kw):
    import exapt

    started = time.perf_counter()
    run = exapt.fit(source, strategy, model, adapt_to=target, penalties=penalties, seed=seed, out=out,
                    overwrite=True, progress=False, log=lambda *a: None, **kw)
    m = run.metrics
    return {"source_test_accuracy": m["test"]["accuracy"], "target_test_accuracy": m["target_test"]["accuracy"],
            "target_test_macro_f1": m["target_test"]["macro_f1"], "best_epoch": m["best_epoch"],
            "model_selection": m["model_selection"]["validation"], "n_target_test": m["n_target_test"],
            "seconds": round(time.perf_counter() - started, 1)}


def sweep(name, methods, seeds, tmp: Path, **kw) -> dict:
    rows = {}
    for method, penalties in methods.items():
        rows[method] = []
        for seed in seeds:
            r = fit(penalties=penalties, seed=seed, out=tmp / f"{name}-{method}-{seed}", **kw)
            rows[method].append(r)
            print(f"{name} {method} seed {seed}: target {r['target_test_accuracy']:.4f} "
                  f"(source {r['source_test_accuracy']:.4f}, epoch {r['best_epoch']}, {r['seconds']} s)", flush=True)
    base = statistics.mean(r["target_test_accuracy"] for r in rows["source-only"])
    summary = {}
    for method, runs in rows.items():
        accs = [r["target_test_accuracy"] for r in runs]
        summary[method] = {"target_accuracy_mean": statistics.mean(accs),
                           "target_macro_f1_mean": statistics.mean(r["target_test_macro_f1"] for r in runs),
                           "target_accuracy_sd": statistics.stdev(accs) if len(accs) > 1 else 0.0,
                           "source_accuracy_mean": statistics.mean(r["source_test_accuracy"] for r in runs),
                           "gain_over_source_only_points": 100 * (statistics.mean(accs) - base),
                           "per_seed": accs}
    return {"runs": rows, "summary": summary}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--report", metavar="JSON", help="only rewrite the Markdown table from a results JSON")
    a = ap.parse_args()
    if a.report:
        import json

        write_report(json.loads(Path(a.report).read_text()), Path(a.report).with_suffix(".md"))
        return
    seeds = [0] if a.quick else [0, 1, 2]
    epochs = 3 if a.quick else 20
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        digits = sweep("digits", DIGITS, seeds, tmp, source="mnist-8x8", target="optdigits", model="cnn",
                       strategy="full", lr=1e-3, epochs=epochs, batch_size=64, patience=0)
        tweets = sweep("tweets", TWEETS, seeds, tmp, source="tweets-airline", target="tweets-self-driving",
                       model="minilm-l6", strategy="lp-ft", n_per_class=64, max_length=64,
                       epochs=3 if a.quick else None)
    s = digits["summary"]
    best = max(("dann", "coral"), key=lambda m: s[m]["gain_over_source_only_points"])
    verdict = {"best_of_dann_coral": best, "gain_points": s[best]["gain_over_source_only_points"],
               "target_met": s[best]["gain_over_source_only_points"] >= 5.0}
    result = {"machine": machine(), "quick": a.quick, "seeds": seeds, "digits": digits, "tweets": tweets,
              "verdict": verdict, "seconds": round(time.perf_counter() - started, 1)}
    name = "adapt_quick" if a.quick else "adapt"
    write_json(RESULTS / f"{name}.json", result)
    write_report(result, RESULTS / f"{name}.md")


def write_report(result: dict, path: Path) -> None:
    def table(title, runs):
        base = statistics.mean(r["target_test_accuracy"] for r in runs["source-only"])
        lines = [f"### {title}", "", "| method | target accuracy (mean ± sd) | per seed | gain vs source-only | "
                 "target macro-F1 | source accuracy | epoch chosen (source val) |", "|---|---|---|---|---|---|---|"]
        for method, rs in runs.items():
            accs = [r["target_test_accuracy"] for r in rs]
            sd = statistics.stdev(accs) if len(accs) > 1 else 0.0
            lines.append(f"| {method} | {statistics.mean(accs):.4f} ± {sd:.4f} | {', '.join(f'{x:.4f}' for x in accs)} | "
                         f"{100 * (statistics.mean(accs) - base):+.1f} | "
                         f"{statistics.mean(r['target_test_macro_f1'] for r in rs):.4f} | "
                         f"{statistics.mean(r['source_test_accuracy'] for r in rs):.4f} | "
                         f"{', '.join(str(r['best_epoch']) for r in rs)} |")
        return "\n".join(lines) + "\n"

    v = result["verdict"]
    md = (table("MNIST (pooled to 8x8) -> optdigits, cnn from scratch, full, no target labels",
                result["digits"]["runs"]) + "\n"
          + table("tweets: airline -> self-driving cars, MiniLM lp-ft, 64 airline tweets per class",
                  result["tweets"]["runs"])
          + f"\nTarget (dann or coral >= +5 points over source-only on digits): best {v['best_of_dann_coral']} "
          f"{v['gain_points']:+.1f} points -> {'met' if v['target_met'] else 'NOT met'}\n")
    path.write_text(md)
    print(md)


if __name__ == "__main__":
    main()
