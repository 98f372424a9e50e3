"""Accuracy on the fixed tweet splits: exapt vs. the standard tools, same files, same run.

    python benchmarks/accuracy_tweets.py [--sizes 8,16,64] [--seeds 0,1,2]

exapt: linear-probe, full, lp-ft (all training examples used, no validation split, 64
tokens - as the peers). Peers: scikit-learn LogisticRegression(C=1) on the model's own
sentence embeddings, Hugging Face Trainer full fine-tuning, and SetFit (`--methods
peer:setfit`; `pip install -e ".[peers]"`, which `make bench` does) (benchmarks/peers.py).
Rows append to results/accuracy_tweets.csv as they finish (a killed run resumes);
results/accuracy_tweets.md is the summary table with per-seed wins.
"""
from __future__ import annotations

import argparse
import csv
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, TWEETS, minilm_dir, read_csv  # noqa: E402

FIELDS = ["tool", "method", "n", "seed", "accuracy", "macro_f1", "seconds"]
PAIRS = [("linear-probe", "sklearn-probe"), ("full", "trainer-full"), ("lp-ft", "trainer-full"), ("lp-ft", "setfit")]


def done_rows(path: Path) -> list[dict]:
    if not path.exists():
        return []
    with open(path) as fh:
        return list(csv.DictReader(fh))


def run_cell(tool, method, n, seed, test, **fit_options) -> dict:
    """One cell; `fit_options` go to exapt.fit (reproduce_tweets.py passes the mask setting
    the committed cells were run with)."""
    from sklearn.metrics import accuracy_score, f1_score

    train = read_csv(TWEETS / f"train_n{n}_s{seed}.csv")
    start = time.perf_counter()
    if tool == "exapt":
        import exapt

        run = exapt.fit(str(TWEETS / f"train_n{n}_s{seed}.csv"), method, "minilm-l6", test=str(TWEETS / "test.csv"),
                        val_fraction=0, seed=seed, max_length=64, out=RESULTS / "runs" / f"{method}-n{n}-s{seed}",
                        overwrite=True, progress=False, log=lambda *a: None, **fit_options)
        m = run.metrics
        return {"accuracy": m["test"]["accuracy"], "macro_f1": m["test"]["macro_f1"], "seconds": m["train_seconds"]}
    import peers

    if method == "sklearn-probe":
        pred, _ = peers.sklearn_probe(minilm_dir(), train.text, train.label, test.text)
    elif method == "setfit":
        pred, _ = peers.setfit_classify(minilm_dir(), train.text, train.label, test.text)
    else:
        pred = peers.trainer_finetune(minilm_dir(), train.text, train.label, test.text,
                                      ["negative", "neutral", "positive"], seed=seed)["predictions"]
    return {"accuracy": accuracy_score(test.label, pred), "macro_f1": f1_score(test.label, pred, average="macro"),
            "seconds": time.perf_counter() - start}


def summarise(rows: list[dict]) -> str:
    import pandas as pd

    df = pd.DataFrame(rows)
    df[["accuracy", "macro_f1", "seconds"]] = df[["accuracy", "macro_f1", "seconds"]].astype(float)
    df["n"] = df["n"].astype(int)
    lines = ["| method | " + " | ".join(f"n={n}/class" for n in sorted(df.n.unique())) + " |",
             "|---|" + "---|" * df.n.nunique()]
    for (tool, method), g in df.groupby(["tool", "method"], sort=False):
        cells = []
        for n in sorted(df.n.unique()):
            h = g[g.n == n]
            cells.append(f"{h.accuracy.mean():.3f} ± {h.accuracy.std(ddof=0):.3f} (F1 {h.macro_f1.mean():.3f}, "
                         f"{len(h)} seeds, {h.seconds.mean():.0f} s)" if len(h) else "")
        lines.append(f"| {tool} {method} | " + " | ".join(cells) + " |")
    lines += ["", "Per-seed comparison with the same approach done with the standard tools "
              "(same training file, same test set):", ""]
    for ours, peer in PAIRS:
        for n in sorted(df.n.unique()):
            a = df[(df.method == ours) & (df.n == n)].set_index("seed").accuracy
            b = df[(df.method == peer) & (df.n == n)].set_index("seed").accuracy
            common = a.index.intersection(b.index)
            if len(common):
                wins = int((a[common] >= b[common]).sum())
                lines.append(f"- exapt {ours} vs {peer}, n={n}: mean {a[common].mean():.3f} vs {b[common].mean():.3f} "
                             f"({a[common].mean() - b[common].mean():+.3f}); exapt >= peer on {wins}/{len(common)} seeds")
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--sizes", default="8,16,64")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--methods", default="exapt:linear-probe,peer:sklearn-probe,exapt:lp-ft,exapt:full,peer:trainer-full")
    a = p.parse_args()
    out = RESULTS / "accuracy_tweets.csv"
    rows = done_rows(out)
    done = {(r["tool"], r["method"], r["n"], r["seed"]) for r in rows}
    test = read_csv(TWEETS / "test.csv")
    for n in a.sizes.split(","):
        for seed in a.seeds.split(","):
            for spec in a.methods.split(","):
                tool, method = spec.split(":", 1)
                if (tool, method, n, seed) in done:
                    continue
                r = {"tool": tool, "method": method, "n": n, "seed": seed, **run_cell(tool, method, int(n), int(seed), test)}
                print(r, flush=True)
                rows.append({k: str(v) for k, v in r.items()})
                new = not out.exists()
                out.parent.mkdir(parents=True, exist_ok=True)
                with open(out, "a", newline="") as fh:
                    w = csv.DictWriter(fh, FIELDS)
                    if new:
                        w.writeheader()
                    w.writerow(r)
    (RESULTS / "accuracy_tweets.md").write_text(summarise(rows))
    print(summarise(rows))


if __name__ == "__main__":
    main()
