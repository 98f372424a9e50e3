"""`exapt rank`: the subcommand's arguments and what it prints.

Wired into `exapt.cli` with two lines: ``add_parser(sub)`` in `build_parser` and
``"rank": run`` in its COMMANDS table. Kept light: the heavy imports happen in `run`.
"""
from __future__ import annotations

import argparse
import math

from ..options import add_options
from .rank import rank
from .scores import SCORES, SOURCE_SCORES
from .suggest import suggestion_lines

DEFAULT_SCORES = "logme,h-score,knn,linear-probe-cv"


def add_parser(sub) -> argparse.ArgumentParser:
    """Add `rank` to an argparse subparsers object; returns the new parser."""
    r = sub.add_parser(
        "rank", help="score candidate models / layers on frozen features before fine-tuning (LogME, LEEP, ...)",
        description="Rank source models (and their layers) for a labelled data set from frozen features, "
                    "without fine-tuning; --validate also fine-tunes each candidate and reports how well each "
                    "score predicted the accuracy reached (weighted Kendall tau).")
    r.add_argument("data", help="CSV/TSV/JSONL/Parquet file or built-in name; the scored examples are the "
                                "training examples `exapt fit` would use with the same options")
    r.add_argument("--models", required=True,
                   help="comma-separated candidates: alias, HF model folder, scratch:NAME, MODEL@K (its first K "
                        "layers), or a run folder (its encoder; its classification head gives LEEP/NCE)")
    r.add_argument("--layers", help="all, or layer numbers like 1,3,6: one candidate per layer of each model")
    r.add_argument("--scores", default=DEFAULT_SCORES,
                   help=f"comma-separated, from {', '.join([*SCORES, *SOURCE_SCORES])}, or all (default: {DEFAULT_SCORES})")
    add_options(r, "n-per-class", "seed", "test", "test-fraction", "text", "label", "task", "max-length", "long",
                defaults={"max-length": 128}, helps={"n-per-class": "sample N training examples per class (as exapt fit)",
                                                     "max-length": "tokens per text (default: {default})"})
    r.add_argument("--validate", action="store_true",
                   help="also fine-tune every candidate (--strategy) and correlate each score with test accuracy")
    r.add_argument("--strategy", default="linear-probe", help="fine-tuning strategy for --validate (default: linear-probe)")
    add_options(r, "epochs", helps={"epochs": "epochs of each --validate fine-tuning (default: as exapt fit)"})
    r.add_argument("--out", default="rank", help="folder for rank.csv, tau.csv, rank.png, rank.md (default: rank)")
    r.add_argument("--overwrite", action="store_true",
                   help="replace an earlier rank output in --out (its fine-tuning results included)")
    r.add_argument("--quiet", action="store_true")
    add_options(r, "executor", helps={"executor": "where --validate's fine-tunings run: local (default), or "
                                                    "ray[:ADDRESS][,cpus=N,gpus=N,workers=N,retries=N] (docs/scale.md)"})
    return r


def _cell(v) -> str:
    try:
        if v is None or (isinstance(v, float) and not math.isfinite(v)):
            return "n/a"
    except TypeError:
        pass
    if isinstance(v, float):
        return f"{v:.4g}"
    return "n/a" if str(v) == "<NA>" else str(v)


def format_table(frame) -> str:
    """The ranking as aligned text: each score with its rank in brackets."""
    meta = frame.attrs.get("meta", {})
    scores = meta.get("scores", [])
    metric = meta.get("metric", "accuracy")
    cols = [("candidate", None), *[(s, f"{s}_rank") for s in scores]]
    if f"test_{metric}" in frame.columns:
        cols.append((f"test_{metric}", f"test_{metric}_rank"))
    rows = [[c for c, _ in cols]]
    for _, r in frame.iterrows():
        rows.append([str(r[c]) if rank is None else f"{_cell(r[c])} ({_cell(r[rank])})" for c, rank in cols])
    widths = [max(len(row[j]) for row in rows) for j in range(len(cols))]
    lines = ["  ".join(cell.ljust(w) if j == 0 else cell.rjust(w) for j, (cell, w) in enumerate(zip(row, widths)))
             for row in rows]
    return "\n".join(lines)


def run(args) -> None:
    """Run `exapt rank` from parsed arguments; prints the table (and the tau table)."""
    log = (lambda *_a, **_k: None) if args.quiet else print
    frame = rank(args.data, args.models, layers=args.layers, scores=args.scores, n_per_class=args.n_per_class,
                 seed=args.seed, validate=args.validate, strategy=args.strategy, out=args.out, text=args.text,
                 label=args.label, task=args.task, test=args.test, test_fraction=args.test_fraction,
                 max_length=args.max_length, long=args.long, epochs=args.epochs, overwrite=args.overwrite,
                 progress=not args.quiet, log=log, executor=args.executor)
    print(format_table(frame))
    tau = frame.attrs.get("tau")
    meta = frame.attrs.get("meta", {})
    for line in suggestion_lines(meta.get("suggestion")):
        print(line)
    if tau is not None:
        print()
        print(f"weighted Kendall tau against test {meta.get('metric')} after {meta.get('strategy')}:")
        for t in tau:
            print(f"  {t['score']:<16} {_cell(t['weighted_tau']):>7}   picks {t['pick']}")
        ratio = meta.get("rank_to_finetune_ratio")
        print(f"ranking {meta.get('rank_seconds', 0):.1f} s vs fine-tuning {meta.get('finetune_seconds', 0):.1f} s"
              + (f" ({ratio:.1%})" if ratio is not None else ""))
    files = frame.attrs.get("files") or {}
    if files:
        print(f"-> {files['md'].parent}/ ({', '.join(p.name for p in files.values())})")
