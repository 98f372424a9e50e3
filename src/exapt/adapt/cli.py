"""`exapt fit` options of domain adaptation (docs/adaptation.md)."""
from __future__ import annotations

import argparse


def add_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("adapting to another domain (docs/adaptation.md)")
    g.add_argument("--adapt-to", metavar="TARGET", help="target-domain data (file or built-in name; labels optional): "
                   "its unlabelled rows feed --penalty dann/coral/mmd/importance-weights/label-shift, and, when it "
                   "has labels, a held-out part of it is the target test set")
    g.add_argument("--target-test-fraction", type=float, default=0.5, metavar="F",
                   help="of the labelled target rows, held out as the target test set (default: 0.5)")
    g.add_argument("--target-labels", type=int, default=0, metavar="N",
                   help="N labelled target examples per class choose the epoch (default: 0, none)")
    g.add_argument("--select", default="auto", choices=["auto", "source-val", "weighted-val", "target-labels"],
                   help="which validation chooses the epoch (default: target-labels with --target-labels, "
                   "else source-val)")


def apply_to_config(cfg, a: argparse.Namespace) -> None:
    cfg.adapt.data = a.adapt_to
    cfg.adapt.test_fraction = a.target_test_fraction
    cfg.adapt.labels = a.target_labels
    cfg.adapt.select = a.select
