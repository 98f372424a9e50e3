"""Issue 22 part 5, measured: synthetic tweets by masked-LM infilling, weighted by ALPHA.

The masked LM: all-MiniLM-L6-v2 has no masked-LM head (it is a sentence encoder), so it is
continued with masked-LM on the tweets first, on `tweets-minus-splits.txt`, the built-in
tweets minus every text of the fixed splits in the shared tweets folder (written by
pretrain_tweets_encoders.py), so the masked LM never saw a tweet scored, trained or
tested on here:

    exapt pretrain benchmarks/results/models/tweets-minus-splits.txt --alphabet text --init minilm-l6 \\
        --max-length 64 --batch-size 32 --lr 3e-4 --steps STEPS --eval-every 100 \\
        --out benchmarks/results/models/tweets-mlm-augment

Then, for each size n (16, 64 per class) and seed (the fixed files train_n{n}_s{seed}.csv,
tested on test.csv, 1,500 tweets):

    exapt augment train_n{n}_s{seed}.csv --test test.csv --method mlm:tweets-mlm-augment \\
        --per-example 4 --mask-fraction 0.15 --seed SEED --out synthetic.csv
    exapt fit train_n{n}_s{seed}.csv --test test.csv --strategy linear-probe --seed SEED \\
        --synthetic synthetic.csv --synthetic-weight A       (A = 0, 0.3, 1: each ALPHA fixed)
    ... --synthetic-weight 0,0.3,1                           (ALPHA chosen on validation)

ALPHA = 0 is the fit on the real rows alone. The target: ALPHA chosen on validation is
never worse than ALPHA = 0 beyond the seed spread (the standard deviation over seeds).

    OMP_NUM_THREADS=1 python benchmarks/augment_bench.py [--quick] [--seeds 0,1,2] [--strategy linear-probe]
--quick: n = 16, seed 0 only, results in results/augment-quick.{json,md}. Otherwise
results/augment.{json,md}, rewritten after every (n, seed) so an interrupted run keeps
what it measured (finished ones are skipped on the next call).
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, TWEETS, machine, write_json  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

MODELS = RESULTS / "models"
MLM = MODELS / "tweets-mlm-augment"
MLM_STEPS = 151   # continued pre-training steps: what --max-minutes 22 gave here (see docs/augment.md)
PRETRAIN = ["--alphabet", "text", "--init", "minilm-l6", "--max-length", "64", "--batch-size", "32", "--lr", "3e-4",
            "--eval-every", "100"]
ALPHAS = (0.0, 0.3, 1.0)
PER_EXAMPLE, MASK_FRACTION = 4, 0.15


def ensure_mlm() -> dict:
    """The masked LM (built if missing), checked to be trained on the leak-free corpus."""
    import pretrain_tweets_encoders as pte

    from exapt.backbones.hf import file_sha256
    from exapt.cli import main as exapt_main

    pte.write_corpus()
    if not (MLM / "exapt.json").exists():
        argv = ["pretrain", str(pte.CORPUS), *PRETRAIN, "--steps", str(MLM_STEPS), "--out", str(MLM), "--quiet"]
        argv += ["--resume"] if (MLM / ".train").exists() else (["--overwrite"] if MLM.exists() else [])
        print("exapt " + " ".join(argv), flush=True)
        if exapt_main(argv):
            sys.exit("exapt pretrain failed")
    info = json.loads((MLM / "exapt.json").read_text())["pretrain"]
    if info["corpus_sha256"] != file_sha256(pte.CORPUS):
        sys.exit(f"{MLM} was pre-trained on another corpus than {pte.CORPUS}; delete it and run again")
    return {k: info[k] for k in ("steps", "tokens_seen", "heldout_before", "heldout_after")}


def one(n: int, seed: int, strategy: str) -> dict:
    import pandas as pd

    import exapt
    from exapt.augment.cli import augment
    from exapt.config import FitConfig

    data, test = TWEETS / f"train_n{n}_s{seed}.csv", TWEETS / "test.csv"
    out: dict = {"n": n, "seed": seed, "strategy": strategy}
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        cfg = FitConfig.from_options(str(data), test=str(test), seed=seed)
        frame, counts = augment(cfg, str(MLM), PER_EXAMPLE, MASK_FRACTION, seed)
        synthetic = Path(tmp) / "synthetic.csv"
        frame.to_csv(synthetic, index=False)
        out.update(augment_seconds=round(time.perf_counter() - started, 1), n_synth=len(frame),
                   duplicate_draws=counts["duplicates"], example=_example(frame, data))
        test_inputs = set(pd.read_csv(test)["text"])
        out["synthetic_equal_to_a_test_row"] = int(frame["text"].isin(test_inputs).sum())
        for spec in [*(f"{a:g}" for a in ALPHAS), ",".join(f"{a:g}" for a in ALPHAS)]:
            run = exapt.fit(str(data), strategy, "minilm-l6", test=str(test), seed=seed, synthetic=str(synthetic),
                            synthetic_weight=spec, out=Path(tmp) / f"run-{spec}", progress=False, log=lambda *a: None)
            m = run.metrics
            key = "chosen" if "," in spec else spec
            out[key] = {"test": m["test"], "weight": m["synthetic"]["weight"], "n_real": m["synthetic"]["n_real"],
                        "n_eff": {c: v["n_eff"] for c, v in m["synthetic"]["per_class"].items()}}
            if key == "chosen":
                out[key]["val"] = m["synthetic"]["val"]
    return out


def _example(frame, data: Path) -> dict:
    import pandas as pd

    real = pd.read_csv(data)
    row = frame.iloc[0]
    return {"real": str(real["text"][int(row["source_row"]) - 1]), "synthetic": str(row["text"]), "label": str(row["label"])}


def summarise(rows: list[dict]) -> dict:
    out = {}
    for n in sorted({r["n"] for r in rows}):
        mine = [r for r in rows if r["n"] == n]
        entry = {}
        for key in [*(f"{a:g}" for a in ALPHAS), "chosen"]:
            acc = [r[key]["test"]["accuracy"] for r in mine]
            f1 = [r[key]["test"]["macro_f1"] for r in mine]
            entry[key] = {"accuracy": statistics.mean(acc), "accuracy_sd": statistics.stdev(acc) if len(acc) > 1 else 0.0,
                          "macro_f1": statistics.mean(f1)}
        diffs = [r["chosen"]["test"]["accuracy"] - r["0"]["test"]["accuracy"] for r in mine]
        entry["chosen_minus_alpha0"] = statistics.mean(diffs)
        entry["chosen_minus_alpha0_per_seed"] = diffs
        entry["chosen_weights"] = [r["chosen"]["weight"] for r in mine]
        spread = entry["0"]["accuracy_sd"]
        entry["target_met"] = entry["chosen_minus_alpha0"] >= -spread if len(mine) > 1 else None
        out[f"n{n}"] = entry
    return out


def write(rows: list[dict], mlm: dict, quick: bool, strategy: str) -> None:
    name = "augment-quick" if quick else "augment"
    summary = summarise(rows)
    write_json(RESULTS / f"{name}.json", {"strategy": strategy, "alphas": list(ALPHAS), "per_example": PER_EXAMPLE,
                                          "mask_fraction": MASK_FRACTION, "mlm": mlm, "machine": machine(),
                                          "summary": summary, "runs": rows})
    lines = [f"# Synthetic tweets by masked-LM infilling, weighted by ALPHA ({strategy}, minilm-l6)", "",
             f"Masked LM: minilm-l6 continued on the leak-free tweets corpus, {mlm['steps']} steps; held-out "
             f"masked-token accuracy {mlm['heldout_before']['accuracy']:.3f} -> {mlm['heldout_after']['accuracy']:.3f}. "
             f"{PER_EXAMPLE} synthetic rows per training row, {MASK_FRACTION:.0%} of tokens masked. Test: the fixed "
             "1,500 tweets. Accuracy, mean over seeds (sd).", "",
             "| n per class | seeds | ALPHA 0 (real only) | ALPHA 0.3 | ALPHA 1 | ALPHA chosen on val | chosen - 0 "
             "(per seed) | ALPHAs chosen |",
             "|---|---|---|---|---|---|---|---|"]
    for key, e in summary.items():
        seeds = sum(1 for r in rows if f"n{r['n']}" == key)
        cells = [f"{e[k]['accuracy']:.3f} ({e[k]['accuracy_sd']:.3f})" for k in ("0", "0.3", "1", "chosen")]
        per_seed = ", ".join(f"{d:+.3f}" for d in e["chosen_minus_alpha0_per_seed"])
        lines.append(f"| {key[1:]} | {seeds} | {' | '.join(cells)} | {e['chosen_minus_alpha0']:+.3f} ({per_seed}) | "
                     f"{', '.join(f'{w:g}' for w in e['chosen_weights'])} |")
    lines += ["", "Macro-F1, mean over seeds:", "", "| n per class | ALPHA 0 | ALPHA 0.3 | ALPHA 1 | chosen |", "|---|---|---|---|---|"]
    for key, e in summary.items():
        lines.append(f"| {key[1:]} | " + " | ".join(f"{e[k]['macro_f1']:.3f}" for k in ("0", "0.3", "1", "chosen")) + " |")
    ex = rows[0]["example"]
    lines += ["", f"An example ({ex['label']}): real `{ex['real']}` -> synthetic `{ex['synthetic']}`", "",
              "Reproduce: `OMP_NUM_THREADS=1 python benchmarks/augment_bench.py" + (" --quick`" if quick else "`"), ""]
    (RESULTS / f"{name}.md").write_text("\n".join(lines))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="n = 16, seed 0 only")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--sizes", default="16,64")
    ap.add_argument("--strategy", default="linear-probe")
    args = ap.parse_args()
    sizes = [16] if args.quick else [int(s) for s in args.sizes.split(",")]
    seeds = [0] if args.quick else [int(s) for s in args.seeds.split(",")]
    mlm = ensure_mlm()
    path = RESULTS / ("augment-quick.json" if args.quick else "augment.json")
    done = json.loads(path.read_text())["runs"] if path.exists() else []
    rows = [r for r in done if r["strategy"] == args.strategy]
    for seed in seeds:      # seed-major: every size measured once before any second seed
        for n in sizes:
            if any(r["n"] == n and r["seed"] == seed for r in rows):
                continue
            rows.append(one(n, seed, args.strategy))
            r = rows[-1]
            print(f"n={n} seed={seed}: " + "  ".join(f"ALPHA {k}: {r[k]['test']['accuracy']:.4f}" for k in ("0", "0.3", "1"))
                  + f"  chosen {r['chosen']['weight']:g}: {r['chosen']['test']['accuracy']:.4f}", flush=True)
            write(rows, mlm, args.quick, args.strategy)
    if rows:
        write(rows, mlm, args.quick, args.strategy)


if __name__ == "__main__":
    main()
