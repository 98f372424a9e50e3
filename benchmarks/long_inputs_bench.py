"""Issue 22's long-input target: `--long chunk` against truncation to one window.

Data: the built-in `rrna16s` (16S rRNA genes of 1,205-1,655 bases, labels: 17 phyla),
N labelled genes per class (default 16), at most 500 test genes. Model: a small DNA
encoder exapt pre-trained on the E. coli genome (single-base tokens, windows of 128
tokens), built by

    exapt pretrain ecoli --objective mlm --alphabet dna --arch tiny --max-minutes 6 \\
        --max-length 128 --batch-size 32 --out DNA_TINY

(about 6 minutes of training steps on one CPU thread; held-out masked-LM accuracy
0.045 -> 0.34). Its default --max-length is the 128-token window it was trained on
(exapt.json), so a gene of ~1,500 bases is cut to its first 126 bases unless chunked.

Conditions, each a linear probe (frozen features, L-BFGS head) over 3 seeds:
- truncate: the default, one window (the first 126 bases);
- truncate-512: one longer window (--max-length 512): positions 128-511 of the position
  table were never trained, the other cheap way out;
- chunk: `--long chunk` (windows 63 tokens apart, embeddings averaged);
- chunk-attention: `--long chunk:pool=attention`.
Windows of all conditions see the same tokens; only how a long gene is read differs.

    OMP_NUM_THREADS=1 python benchmarks/long_inputs_bench.py --model DNA_TINY --max-test 300  # ~25 min, 1 core
    python benchmarks/long_inputs_bench.py --model DNA_TINY --max-test 300 --strategies full --seeds 1 \
        --epochs 3 --conditions truncate,chunk --name long_inputs_full                        # full fine-tuning
    python benchmarks/long_inputs_bench.py --model DNA_TINY --quick             # 1 seed, 4 per class
Writes results/long_inputs.json and results/long_inputs.md.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

from common import RESULTS, machine, write_json

CONDITIONS = {
    "truncate": {},
    "truncate-512": {"max_length": 512},
    "chunk": {"long": "chunk"},
    "chunk-attention": {"long": "chunk:pool=attention"},
}


def run_one(model: str, condition: str, seed: int, n_per_class: int, max_test: int, strategy: str, out: Path,
            epochs: int | None = None) -> dict:
    import exapt

    started = time.perf_counter()
    run = exapt.fit("rrna16s", strategy, model, n_per_class=n_per_class, max_test=max_test, seed=seed,
                    out=out / f"{condition}-{seed}", progress=False, log=lambda *a, **k: None, epochs=epochs,
                    **CONDITIONS[condition])
    m = run.metrics
    return {"condition": condition, "seed": seed, "strategy": strategy, "accuracy": m["test"]["accuracy"],
            "macro_f1": m["test"]["macro_f1"], "max_length": run.config.max_length, "long": run.config.long,
            "n_truncated_test": m["n_truncated"]["test"], "n_chunked_test": m.get("n_chunked", {}).get("test", 0),
            "n_train": m["n_train"], "n_test": m["n_test"], "seconds": round(time.perf_counter() - started, 1)}


def summarise(rows: list[dict]) -> list[dict]:
    out = []
    for (strategy, condition) in dict.fromkeys((r["strategy"], r["condition"]) for r in rows):
        group = [r for r in rows if r["condition"] == condition and r["strategy"] == strategy]
        acc, f1 = [r["accuracy"] for r in group], [r["macro_f1"] for r in group]
        out.append({"strategy": strategy, "condition": condition, "seeds": len(group),
                    "accuracy_mean": statistics.mean(acc), "accuracy_sd": statistics.stdev(acc) if len(acc) > 1 else 0.0,
                    "macro_f1_mean": statistics.mean(f1), "macro_f1_sd": statistics.stdev(f1) if len(f1) > 1 else 0.0,
                    "seconds_mean": statistics.mean(r["seconds"] for r in group),
                    "n_truncated_test": group[0]["n_truncated_test"], "n_chunked_test": group[0]["n_chunked_test"]})
    return out


def markdown(summary: list[dict], settings: dict) -> str:
    lines = [f"**rrna16s** phyla ({settings['n_per_class']} genes per class, test {settings['n_test']} genes), "
             f"model `{settings['model_name']}` (exapt pretrain, tiny, DNA windows of 128 tokens); "
             f"test accuracy and macro-F1, mean +- sd over {settings['seeds']} seeds", "",
             "| strategy | inputs | accuracy | macro-F1 | test genes truncated / chunked | s per fit |",
             "|---|---|---|---|---|---|"]
    for s in summary:
        lines.append(f"| {s['strategy']} | {s['condition']} | {s['accuracy_mean']:.3f} +- {s['accuracy_sd']:.3f} | "
                     f"{s['macro_f1_mean']:.3f} +- {s['macro_f1_sd']:.3f} | {s['n_truncated_test']} / "
                     f"{s['n_chunked_test']} | {s['seconds_mean']:.0f} |")
    base = {s["strategy"]: s for s in summary if s["condition"] == "truncate"}
    lines.append("")
    for s in summary:
        if s["condition"] != "truncate" and s["strategy"] in base:
            b = base[s["strategy"]]
            lines.append(f"- {s['strategy']}, {s['condition']} vs truncate: "
                         f"{100 * (s['accuracy_mean'] - b['accuracy_mean']):+.1f} points of accuracy, "
                         f"{100 * (s['macro_f1_mean'] - b['macro_f1_mean']):+.1f} of macro-F1")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True, help="an exapt-pretrained DNA model folder (see the docstring)")
    ap.add_argument("--n-per-class", type=int, default=16)
    ap.add_argument("--max-test", type=int, default=500)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--strategies", default="linear-probe")
    ap.add_argument("--conditions", default=",".join(CONDITIONS))
    ap.add_argument("--epochs", type=int, help="for gradient strategies (default: exapt's)")
    ap.add_argument("--name", default="long_inputs", help="results/NAME.{json,md}")
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    n, seeds, max_test = (4, 1, 100) if args.quick else (args.n_per_class, args.seeds, args.max_test)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for strategy in args.strategies.split(","):
            for condition in args.conditions.split(","):
                for seed in range(seeds):
                    row = run_one(args.model, condition, seed, n, max_test, strategy, Path(tmp) / strategy,
                                  args.epochs)
                    print(row, file=sys.stderr, flush=True)
                    rows.append(row)
    summary = summarise(rows)
    settings = {"data": "rrna16s", "model": str(args.model), "model_name": Path(args.model).name,
                "n_per_class": n, "max_test": max_test, "n_test": rows[0]["n_test"], "seeds": seeds,
                "strategies": args.strategies, "epochs": args.epochs, "machine": machine()}
    name = f"{args.name}_quick" if args.quick else args.name
    write_json(RESULTS / f"{name}.json", {"settings": settings, "summary": summary, "rows": rows})
    (RESULTS / f"{name}.md").write_text(markdown(summary, settings))
    print(markdown(summary, settings))


if __name__ == "__main__":
    main()
