"""Command-line options of the source side and the penalties, for `fit` and `compare`,
and the `exapt penalties` listing. Wired into `exapt.cli` with one call per parser."""
from __future__ import annotations

import argparse

from ..config import SourceConfig
from ..registry import PENALTIES


def add_source_options(p: argparse.ArgumentParser, penalty: bool = True) -> None:
    """--init, --penalty (fit only: compare names penalties per cell, `full+ewc:1e4`), --source-*."""
    g = p.add_argument_group("starting from a source, and not forgetting it (docs/forgetting.md)")
    g.add_argument("--init", metavar="RUN", help="start from this run's weights; its head is kept as the source "
                   "head, and the source task is scored before and after (forgetting)")
    if penalty:
        g.add_argument("--penalty", action="append", default=[], metavar="NAME[:WEIGHT]",
                       help="add a penalty (repeatable): l2sp, l2sp-decoupled, ewc, source-head, lwf, hierarchy; across domains "
                       "dann, coral, mmd, importance-weights, label-shift (with --adapt-to), pair-align; "
                       "see `exapt penalties`")
    g.add_argument("--source-data", metavar="DATA", help="labelled source examples (default: the --init run's own "
                   "data, split as it was split)")
    g.add_argument("--source-text", help="text column(s) of --source-data (default: the --init run's)")
    g.add_argument("--source-label", help="label column of --source-data (default: the --init run's)")
    g.add_argument("--source-features", help="feature columns of --source-data (default: the --init run's)")
    g.add_argument("--source-corpus", metavar="CORPUS", help="unlabelled corpus of a self-supervised source: the "
                   "masked-LM --model (made by exapt pretrain) is scored on it before/after, and ewc uses it "
                   "(FASTA/text file, or ecoli, uniprot, tweets)")
    g.add_argument("--source-max-test", type=int, default=1000, metavar="N",
                   help="held-out source examples (or corpus windows) scored before and after (default: 1000)")


def source_config(a: argparse.Namespace):
    def columns(value):
        return [c.strip() for c in value.split(",")] if value and "," in value else value

    return SourceConfig(data=a.source_data, text=columns(a.source_text), label=a.source_label,
                        features=[c.strip() for c in a.source_features.split(",")] if a.source_features else None,
                        corpus=a.source_corpus, max_test=a.source_max_test)


def apply_to_config(cfg, a: argparse.Namespace) -> None:
    """Copy the parsed options into a FitConfig (before --set overrides)."""
    cfg.init = a.init
    cfg.penalties = list(getattr(a, "penalty", []) or [])
    cfg.source = source_config(a)


def add_parser(sub) -> None:
    sub.add_parser("penalties", help="registered penalties (--penalty NAME[:WEIGHT])")


def run(a: argparse.Namespace) -> None:
    for name, cls in PENALTIES.items():
        defaults = cls()
        print(f"{name:<14} {cls.summary}  [default {defaults.spec().partition(':')[2]}]")
