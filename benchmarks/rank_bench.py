"""Issue targets for `exapt rank`, measured on the fixed tweet splits.

1. Does LogME predict fine-tuned accuracy? Candidates (issue 7: "MiniLM layers 1..6, the
   scratch twin and any encoder exapt has pre-trained"): all-MiniLM-L6-v2 truncated to
   its first 1..6 layers (minilm-l6@1 .. minilm-l6@6), its scratch twin, and the two
   encoders `exapt pretrain` makes from the tweets with every tweet of the fixed splits
   left out (benchmarks/results/models/tweets-dapt, MiniLM continued; tweets-tiny, a tiny
   BERT from scratch; built by pretrain_tweets_encoders.py, ~30 min, when missing). Each is
   scored on frozen features of the 192 training tweets of train_n64_s{seed}.csv, then
   fine-tuned (lp-ft, and linear-probe) on the same tweets and tested on test.csv
   (1,500 tweets), max length 64, seeds 0, 1, 2. Target: weighted Kendall tau between
   LogME and lp-ft test accuracy >= 0.6 (reported per seed, as the mean over seeds, and
   for the seed-averaged scores against the seed-averaged accuracies). `--size 256` uses
   train_n256_s{seed}.csv instead (768 tweets: more examples than MiniLM's 384 feature
   dimensions, the regime LogME's evidence is meant for); `--strategies full` validates
   against full fine-tuning, as the LogME paper does.
2. Cost: ranking every candidate from an empty feature cache (model loading, one
   forward pass per model for all its layers, every score) against fine-tuning every
   candidate (each strategy from an empty cache too, so a linear probe does not reuse the
   features another fine-tuning encoded). Target: ranking <= 5% of fine-tuning.
3. LogME alone on 10,000 x 384 random features, 3 classes.

    python benchmarks/rank_bench.py                       # 64 per class (~30 min on one thread)
    python benchmarks/rank_bench.py --size 256            # 256 per class (~35 min) -> results/rank-n256.json
    python benchmarks/rank_bench.py --strategies full --output benchmarks/results/rank-full.json   # (~22 min)
    python benchmarks/rank_bench.py --quick               # smoke test: 2 candidates, 1 seed, tiny test set
Run it alone: two heavy jobs on 2 cores distort every timing. Writes results/rank.json and rank.md
(results/rank-n{size}.json and .md for another --size; --output names another file).
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from common import RESULTS, ROOT, TWEETS, machine, write_json
from pretrain_tweets_encoders import ENCODERS, MODELS, corpus_texts, ensure_encoders, summary

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

REPO = ROOT.parent  # candidates are named by folders relative to it (main() runs there)
PRETRAINED = [str((MODELS / name).relative_to(REPO)) for name in ENCODERS]
CANDIDATES = [f"minilm-l6@{k}" for k in range(1, 7)] + ["scratch:minilm-l6"] + PRETRAINED
QUICK_CANDIDATES = ["minilm-l6@1", "minilm-l6"]
SCORES = "logme,h-score,knn,linear-probe-cv"
TARGET_TAU, TARGET_RATIO = 0.6, 0.05


def logme_timing(n: int = 10_000, d: int = 384, classes: int = 3, repeats: int = 3) -> dict:
    import numpy as np

    from exapt.select import logme

    rng = np.random.default_rng(0)
    f = rng.standard_normal((n, d)).astype(np.float32)
    y = rng.integers(0, classes, n)
    logme(f[:100], y[:100])  # warm-up (imports, BLAS threads)
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        logme(f, y)
        times.append(time.perf_counter() - started)
    print(f"LogME on {n} x {d} x {classes} random features: {min(times):.3f} s (best of {repeats})", flush=True)
    return {"n": n, "d": d, "classes": classes, "seconds_best": round(min(times), 4),
            "seconds_median": round(statistics.median(times), 4), "repeats": repeats}


def one_seed(seed: int, train: Path, test: Path, candidates: list[str], strategies: list[str], max_length: int,
             epochs: int | None, out_root: Path, work: Path) -> dict:
    import pandas as pd

    from exapt.select.rank import rank

    os.environ["EXAPT_CACHE"] = str(work / f"cache-s{seed}")      # cold: every feature computed, timed
    common = dict(test=str(test), max_length=max_length, seed=seed, scores=SCORES, progress=False)
    started = time.perf_counter()
    cold = rank(str(train), candidates, log=None, **common)
    cold_seconds = time.perf_counter() - started
    print(f"seed {seed}: ranked {len(candidates)} candidates from an empty cache in {cold_seconds:.1f} s", flush=True)
    result = {"seed": seed, "train": str(train), "rank_seconds": round(cold_seconds, 2),
              "rank_seconds_per_candidate": dict(zip(cold["candidate"], cold["score_seconds"])),
              "scores": {s: dict(zip(cold["candidate"], cold[s].round(6))) for s in SCORES.split(",")},
              "strategies": {}}
    for strategy in strategies:
        out = out_root / f"rank-{strategy.replace(':', '')}-{train.stem}"   # train_n{size}_s{seed}
        # a cold cache for each strategy too, so that no fine-tuning reuses features another one encoded
        os.environ["EXAPT_CACHE"] = str(work / f"cache-s{seed}-{strategy.replace(':', '')}")
        frame = rank(str(train), candidates, validate=True, strategy=strategy, epochs=epochs, out=out,
                     overwrite=True, log=lambda *a: print(*a, flush=True), **common)
        meta, tau = frame.attrs["meta"], pd.DataFrame(frame.attrs["tau"])
        finetune = float(meta["finetune_seconds"])
        entry = {"accuracy": dict(zip(frame["candidate"], frame["test_accuracy"].round(6))),
                 "finetune_seconds": round(finetune, 1),
                 "finetune_seconds_per_candidate": dict(zip(frame["candidate"], frame["finetune_seconds"])),
                 "ratio": round(cold_seconds / finetune, 5) if finetune else None,
                 "tau": {r.score: {"weighted_tau": _num(r.weighted_tau), "kendall_tau": _num(r.kendall_tau),
                                   "pick": r.pick, "picks_best": bool(r.picks_best)} for r in tau.itertuples()},
                 "out": str(out)}
        result["strategies"][strategy] = entry
        print(f"seed {seed} {strategy}: LogME weighted tau {entry['tau']['logme']['weighted_tau']}, "
              f"ranking {cold_seconds:.1f} s / fine-tuning {finetune:.1f} s = {entry['ratio']:.2%}", flush=True)
    return result


def _num(v) -> float | None:
    import math

    return None if v is None or not math.isfinite(v) else round(float(v), 4)


def summarise(seeds: list[dict], strategies: list[str], candidates: list[str]) -> dict:
    """Per strategy: mean tau per score over seeds, tau of seed-mean scores vs seed-mean accuracy, cost ratio."""
    from exapt.select import weighted_kendall_tau

    out = {}
    for strategy in strategies:
        mean_acc = [statistics.mean(s["strategies"][strategy]["accuracy"][c] for s in seeds) for c in candidates]
        taus = {}
        for score in SCORES.split(","):
            per_seed = [s["strategies"][strategy]["tau"][score]["weighted_tau"] for s in seeds]
            mean_score = [statistics.mean(s["scores"][score][c] for s in seeds) for c in candidates]
            finite = [t for t in per_seed if t is not None]
            taus[score] = {"per_seed": per_seed, "mean_over_seeds": round(statistics.mean(finite), 4) if finite else None,
                           "of_seed_means": _num(weighted_kendall_tau(mean_score, mean_acc))}
        rank_s = sum(s["rank_seconds"] for s in seeds)
        fine_s = sum(s["strategies"][strategy]["finetune_seconds"] for s in seeds)
        out[strategy] = {"mean_accuracy": dict(zip(candidates, [round(a, 4) for a in mean_acc])), "tau": taus,
                         "rank_seconds": round(rank_s, 1), "finetune_seconds": round(fine_s, 1),
                         "ratio": round(rank_s / fine_s, 5) if fine_s else None}
    return out


def _short(candidate: str) -> str:
    return Path(candidate).name if candidate in PRETRAINED else candidate


def markdown(result: dict) -> str:
    """The tables of docs/rank.md: accuracy and LogME per candidate, tau per score and seed, cost."""
    cands, strategies, seeds = result["candidates"], result["strategies"], result["seeds"]
    main_strategy = result["verdict"]["strategy"]
    size = result.get("size_per_class", 64)
    lines = [f"Scored and fine-tuned on train_n{size}_s{{seed}}.csv ({size} tweets per class, {3 * size} in all), "
             f"seeds {', '.join(map(str, seeds))}; tested on {Path(result['test']).name}.", "",
             "| candidate | " + " | ".join(f"`{s}` accuracy" for s in strategies) + " | LogME (mean of seeds) |",
             "|---|" + "---:|" * (len(strategies) + 1)]
    for c in cands:
        logme = statistics.mean(s["scores"]["logme"][c] for s in result["by_seed"])
        accs = " | ".join(f"{result['summary'][s]['mean_accuracy'][c]:.3f}" for s in strategies)
        lines.append(f"| `{_short(c)}` | {accs} | {logme:.4f} |")
    lines += ["", f"Weighted Kendall tau between each score and `{main_strategy}` test accuracy:", "",
              "| score | " + " | ".join(f"seed {s}" for s in seeds) + " | mean | of seed means |",
              "|---|" + "---:|" * (len(seeds) + 2)]
    for score, t in result["summary"][main_strategy]["tau"].items():
        per = " | ".join("n/a" if v is None else f"{v:.2f}" for v in t["per_seed"])
        lines.append(f"| `{score}` | {per} | {t['mean_over_seeds']} | {t['of_seed_means']} |")
    v = result["verdict"]
    lines += ["", f"Target: LogME weighted tau (mean over seeds) >= {TARGET_TAU}: {v['logme_weighted_tau_mean']} "
              f"({'met' if v['tau_target_met'] else 'not met'}); ranking / fine-tuning time <= {TARGET_RATIO:.0%}: "
              f"{v['ratio']:.2%} ({'met' if v['ratio_target_met'] else 'not met'})."]
    for strategy in strategies:
        s = result["summary"][strategy]
        lines.append(f"- ranking {s['rank_seconds']:.1f} s against `{strategy}` fine-tuning {s['finetune_seconds']:.0f} s "
                     f"over the seeds ({s['ratio']:.2%})")
    for c, e in result.get("pretrained", {}).get("encoders", {}).items():
        b, a = e["heldout_before"], e["heldout_after"]
        lines.append(f"- `{_short(c)}`: {e['steps']} pre-training steps, {e['tokens_seen']:,} tokens; held-out "
                     f"masked-LM loss {b['loss']:.3f} -> {a['loss']:.3f}, accuracy {b['accuracy']:.3f} -> "
                     f"{a['accuracy']:.3f}")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="smoke test: 2 candidates, seed 0, 60 test tweets, 1 epoch")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--size", type=int, default=64, choices=(8, 16, 64, 256),
                        help="labelled tweets per class: the fixed split train_n{size}_s{seed}.csv")
    parser.add_argument("--strategies", default="lp-ft,linear-probe")
    parser.add_argument("--max-length", type=int, default=64)
    parser.add_argument("--epochs", type=int, help="default: as exapt fit (about 120 optimiser steps)")
    parser.add_argument("--output", type=Path, help="default: benchmarks/results/rank.json (--quick: a temp file)")
    args = parser.parse_args()
    import pandas as pd

    args.output = args.output.resolve() if args.output else None
    os.chdir(REPO)
    work = Path(tempfile.mkdtemp(prefix="exapt-rank-bench-"))
    try:
        seeds = [int(s) for s in args.seeds.split(",")]
        candidates, test, epochs = CANDIDATES, TWEETS / "test.csv", args.epochs
        out_root = RESULTS / "runs"
        output = args.output or RESULTS / ("rank.json" if args.size == 64 else f"rank-n{args.size}.json")
        if args.quick:
            candidates, seeds, epochs = QUICK_CANDIDATES, seeds[:1], args.epochs or 1
            test = work / "test60.csv"
            pd.read_csv(TWEETS / "test.csv").groupby("label").head(20).to_csv(test, index=False)
            out_root = work / "runs"
            output = args.output or Path(tempfile.gettempdir()) / "exapt-rank-bench-quick.json"
        strategies = [s.strip() for s in args.strategies.split(",") if s.strip()]
        pretrained = {}
        if any(c in PRETRAINED for c in candidates):
            ensure_encoders()  # builds a missing one; refuses one pre-trained on another corpus (a leak)
            pretrained = {"corpus": corpus_texts()[1], "encoders": {c: summary(Path(c).name) for c in PRETRAINED}}
        result = {"machine": machine(), "size_per_class": args.size, "candidates": candidates, "pretrained": pretrained, "scores": SCORES.split(","), "seeds": seeds,
                  "strategies": strategies, "max_length": args.max_length, "epochs": epochs, "test": str(test),
                  "quick": args.quick, "targets": {"logme_weighted_tau_lp_ft": TARGET_TAU, "ratio": TARGET_RATIO}}
        started = time.perf_counter()
        result["by_seed"] = [one_seed(s, TWEETS / f"train_n{args.size}_s{s}.csv", test, candidates, strategies,
                                      args.max_length, epochs, out_root, work) for s in seeds]
        result["summary"] = summarise(result["by_seed"], strategies, candidates)
        result["logme_timing"] = logme_timing()
        main_strategy = "lp-ft" if "lp-ft" in strategies else strategies[0]
        s = result["summary"][main_strategy]
        tau = s["tau"]["logme"]["mean_over_seeds"]
        result["verdict"] = {"strategy": main_strategy, "logme_weighted_tau_mean": tau,
                             "logme_weighted_tau_of_means": s["tau"]["logme"]["of_seed_means"],
                             "tau_target_met": tau is not None and tau >= TARGET_TAU,
                             "ratio": s["ratio"], "ratio_target_met": s["ratio"] is not None and s["ratio"] <= TARGET_RATIO}
        result["seconds"] = round(time.perf_counter() - started, 1)
        write_json(output, result)
        if not args.quick:
            output.with_suffix(".md").write_text(markdown(result))
        print(f"{main_strategy}: LogME weighted tau {tau} (target >= {TARGET_TAU}); ranking/fine-tuning "
              f"{s['ratio']} (target <= {TARGET_RATIO}) -> {output}", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
