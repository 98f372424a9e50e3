"""Does a speed lever change results? Seeded fits with and without it, side by side (issue 25).

    python benchmarks/lever_accuracy.py --set attention_dropout=0 [--strategies full,lp-ft] [--n 64] [--seeds 3]

The fixed tweet splits (train_n{N}_s{seed}.csv, the 1,500-tweet test set), MiniLM-L6,
64 tokens, each strategy's defaults; every fit once as exapt does by default and once
with the lever. A lever keeps results when the mean difference is inside the seed spread
(the standard deviation of either side). Writes results/lever_<name>.{json,md}.
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

from common import RESULTS, TWEETS, machine, write_json


def parse_value(text: str):
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return {"true": True, "false": False, "none": None}.get(text.lower(), text)


def main() -> None:
    import exapt

    ap = argparse.ArgumentParser()
    ap.add_argument("--set", required=True, help="the lever, as a fit option: NAME=VALUE")
    ap.add_argument("--strategies", default="full,lp-ft")
    ap.add_argument("--n", type=int, default=64, help="tweets per class (a fixed split)")
    ap.add_argument("--seeds", type=int, default=3)
    args = ap.parse_args()
    name, _, value = args.set.partition("=")
    lever = {name: parse_value(value)}
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for strategy in args.strategies.split(","):
            for seed in range(args.seeds):
                for label, extra in (("default", {}), (args.set, lever)):
                    run = exapt.fit(str(TWEETS / f"train_n{args.n}_s{seed}.csv"), strategy, "minilm-l6",
                                    test=str(TWEETS / "test.csv"), seed=seed, max_length=64,
                                    out=Path(tmp) / f"{strategy}-{seed}-{len(rows)}", progress=False,
                                    log=lambda *a: None, **extra)
                    test = run.metrics["test"]
                    rows.append({"strategy": strategy, "seed": seed, "setting": label, "accuracy": test["accuracy"],
                                 "macro_f1": test["macro_f1"], "train_seconds": run.history[-1]["seconds"]})
                    print(rows[-1], flush=True)
    lines = [f"Lever `{args.set}`: tweets n={args.n}/class, MiniLM-L6, 64 tokens, seeds 0-{args.seeds - 1}.", "",
             "| strategy | default accuracy | with the lever | difference | seed sd | training s (default / lever) |",
             "|---|---:|---:|---:|---:|---|"]
    summary = []
    for strategy in args.strategies.split(","):
        def of(setting, key):
            return [r[key] for r in rows if r["strategy"] == strategy and r["setting"] == setting]
        a, b = of("default", "accuracy"), of(args.set, "accuracy")
        sd = max(statistics.stdev(a), statistics.stdev(b)) if len(a) > 1 else float("nan")
        diff = statistics.mean(b) - statistics.mean(a)
        ta, tb = statistics.mean(of("default", "train_seconds")), statistics.mean(of(args.set, "train_seconds"))
        summary.append({"strategy": strategy, "default": statistics.mean(a), "lever": statistics.mean(b),
                        "difference": diff, "seed_sd": sd, "inside_spread": abs(diff) <= sd,
                        "train_s": [ta, tb]})
        lines.append(f"| {strategy} | {statistics.mean(a):.4f} | {statistics.mean(b):.4f} | {diff:+.4f} | {sd:.4f} | "
                     f"{ta:.1f} / {tb:.1f} |")
    stem = "lever_" + name.replace(".", "_")
    write_json(RESULTS / f"{stem}.json", {"lever": args.set, "n": args.n, "rows": rows, "summary": summary,
                                          "machine": machine()})
    (RESULTS / f"{stem}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
