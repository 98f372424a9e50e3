"""`exapt transfer-map`: the subcommand's arguments and what it prints.

Wired into `exapt.cli` like `rank`: ``add_parser(sub)`` in `build_parser` and
``"transfer-map": run`` in its COMMANDS table. Kept light: the heavy imports happen in `run`.
"""
from __future__ import annotations

import argparse

from ..commandline import typed_command
from ..options import add_options
from .runner import transfer_map


def add_parser(sub) -> argparse.ArgumentParser:
    """Add `transfer-map` to an argparse subparsers object; returns the new parser."""
    t = sub.add_parser(
        "transfer-map", help="fit on each domain, test on every domain -> heat map of accuracy",
        description="For each source domain, fit a strategy on N labelled examples per class and score it on "
                    "the held-out test split of every domain (the diagonal is in-domain). Writes "
                    "transfer-map.csv, transfer-map.png and transfer-map.md; run it again to resume.")
    t.add_argument("--domains", required=True,
                   help="comma-separated built-in names or data files sharing one label set, e.g. "
                        "tweets-airline,tweets-self-driving,tweets-deflategate,tweets-apple")
    t.add_argument("--model", default="minilm-l6", help="alias, HF model folder or scratch:NAME (default: minilm-l6)")
    t.add_argument("--strategy", default="linear-probe", help="see `exapt strategies` (default: linear-probe)")
    t.add_argument("--n-per-class", type=int, default=64,
                   help="labelled examples per class drawn from each source (default: 64)")
    t.add_argument("--seeds", type=int, default=3, help="draws per source (default: 3)")
    add_options(t, "max-test", "test-fraction", "val-fraction", "max-length", "text", "label", "epochs", "batch-size",
                "patience", defaults={"max-test": 500, "max-length": 64},
                helps={"max-test": "cap on each domain's test split (default: {default})",
                       "test-fraction": "of each domain held out for testing, before the cap (default: {default})",
                       "val-fraction": "of the drawn examples, for early stopping (default: {default})",
                       "text": "text column(s) of data-file domains, comma-separated (default: 'text')",
                       "label": "label column of data-file domains (default: {default})",
                       "epochs": "default: as exapt fit"})
    t.add_argument("--out", default="transfer-map", help="output folder (default: transfer-map)")
    t.add_argument("--keep-weights", action="store_true", help="keep each fit's weights (default: scores only)")
    t.add_argument("--overwrite", action="store_true",
                   help="start again when --out holds a transfer map made with other settings")
    t.add_argument("--quiet", action="store_true")
    add_options(t, "executor")
    return t


def _command(args) -> str:
    """The command as typed, less options left at their defaults, for the report."""
    defaults = vars(add_parser(argparse.ArgumentParser().add_subparsers()).parse_args(["--domains", "x"]))
    return typed_command(["exapt", "transfer-map"], args, defaults, always=("domains",))


def run(args) -> None:
    """Run `exapt transfer-map` from parsed arguments; prints the accuracy matrix."""
    log = (lambda *_a, **_k: None) if args.quiet else print
    result = transfer_map(args.domains, args.model, args.strategy, args.n_per_class, args.seeds, args.out,
                          text=args.text, label=args.label, test_fraction=args.test_fraction,
                          max_test=args.max_test, val_fraction=args.val_fraction, max_length=args.max_length,
                          epochs=args.epochs, batch_size=args.batch_size, patience=args.patience,
                          keep_weights=args.keep_weights, overwrite=args.overwrite, progress=not args.quiet,
                          log=log, command=_command(args), executor=args.executor)
    print("mean test accuracy (rows: trained on, columns: tested on)")
    print(result.accuracy.round(3).to_string())
