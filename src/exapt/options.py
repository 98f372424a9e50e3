"""Command-line options that several commands share, declared once: flag, type, default
and help. Each default is read from the config dataclass that owns it (config.py), so a
default changed there reaches every command that takes the option.

    add_options(parser, "text", "label", "test", "max-length")
    add_options(parser, "max-test", "max-length", defaults={"max-test": 500, "max-length": 64})
    FitConfig.from_options(a.data, **option_values(a, "text", "label", "test", "max-length"))
"""
from __future__ import annotations

import argparse

from .config import ClassesConfig, DataConfig, FitConfig, TrainConfig

_DATA, _FIT, _TRAIN, _CLASSES = DataConfig(), FitConfig(), TrainConfig(), ClassesConfig()
TASK_KINDS = ["auto", "classification", "multilabel", "regression"]

# flag -> argparse keywords; "{default}" in a help text is filled with the option's default
SHARED: dict[str, dict] = {
    "text": dict(help="text column(s), comma-separated (default: 'text')"),
    "label": dict(default=_DATA.label, help="label column (default: {default})"),
    "features": dict(help="numeric feature columns, comma-separated (use with --model mlp)"),
    "task": dict(default=_FIT.task, choices=TASK_KINDS),
    "test": dict(help="separate labelled test file (otherwise --test-fraction is split off)"),
    "n-per-class": dict(type=int, help="sample N training examples per class"),
    "seed": dict(type=int, default=_DATA.seed),
    "val-fraction": dict(type=float, default=_DATA.val_fraction,
                         help="of the training examples, for early stopping (0: none)"),
    "test-fraction": dict(type=float, default=_DATA.test_fraction),
    "max-test": dict(type=int, default=_DATA.max_test, help="cap on a split-off test set (default: {default})"),
    "max-length": dict(type=int, default=_FIT.max_length,
                       help="tokens per text (default: the model's own, e.g. 256 for minilm-l6)"),
    "long": dict(metavar="chunk[:STRIDE][,pool=mean|attention]",
                 help="inputs longer than --max-length: cut into overlapping windows STRIDE tokens apart "
                      "(default: half a window) and pool their embeddings (default: truncated)"),
    "privacy": dict(metavar="epsilon=E[,delta=D,clip=C]",
                    help="differentially private training (DP-SGD, Opacus): an (E, D) guarantee for each training "
                         "row; D defaults to 1/(10 n), C (per-example gradient-norm bound) to 1; docs/trust.md"),
    "pooling": dict(choices=["mean", "cls"], help="default: the model folder's, else mean"),
    "epochs": dict(type=int, help="default: enough for ~120 optimiser steps, 3..40 epochs"),
    "lr": dict(type=float, help="encoder learning rate (default: the strategy's)"),
    "batch-size": dict(type=int, default=_TRAIN.batch_size),
    "patience": dict(type=int, default=_TRAIN.patience,
                     help="stop after N epochs without validation gain (0: off; default {default})"),
    # rare classes (docs/rare-classes.md)
    "class-weight": dict(metavar="balanced|CLASS=W,...",
                         help="weigh the training loss by class: balanced (n / (k * n_class)) or explicit weights"),
    "loss": dict(default=_CLASSES.loss, metavar="cross-entropy|focal[:GAMMA]",
                 help="training loss (default: {default}); focal's gamma defaults to 2"),
    "decision": dict(default=_CLASSES.decision, choices=["argmax", "calibrated", "macro-f1"],
                     help="decision rule tuned on validation and saved with the run: calibrated (temperature + the "
                          "data's class frequencies) or macro-f1 (+ class offsets maximising macro-F1) "
                          "(default: {default})"),
    "target-recall": dict(metavar="CLASS=R", help="raise CLASS's decision offset until its validation recall is R"),
    # scale-out (docs/scale.md): commands made of independent fits
    "executor": dict(default="local", metavar="local|ray[:ADDRESS][,cpus=N,gpus=N,workers=N,retries=N]",
                     help="where the independent fits run: local (this process; default), or one Ray task each "
                          "(pip install 'exapt[ray]') on the cluster at ADDRESS (host:port, or auto), else on a "
                          "local cluster of `workers` x `cpus` started for the command; output on a shared disk"),
    # synthetic examples (docs/augment.md)
    "synthetic": dict(metavar="FILE", help="synthetic training rows (exapt augment's output), weighted by ALPHA"),
    "synthetic-weight": dict(default=_DATA.synthetic_weight, metavar="ALPHA[,ALPHA...]", aliases=("--synthetic-weights",),
                             help="loss weight of each synthetic row (default: {default}); several: one fit each, "
                                  "ALPHA chosen on validation (0: real rows alone)"),
}


def add_options(parser: argparse.ArgumentParser, *flags: str, defaults: dict | None = None,
                helps: dict | None = None) -> None:
    """Add the shared options named by `flags` (without dashes); `defaults` and `helps`
    change a flag's default or help text for one command."""
    for flag in flags:
        kw = dict(SHARED[flag])
        if defaults and flag in defaults:
            kw["default"] = defaults[flag]
        if helps and flag in helps:
            kw["help"] = helps[flag]
        if "help" in kw:
            kw["help"] = kw["help"].replace("{default}", str(kw.get("default")))
        parser.add_argument(f"--{flag}", *kw.pop("aliases", ()), **kw)


def option_values(args: argparse.Namespace, *flags: str) -> dict:
    """The parsed values of shared options, keyed as `FitConfig.from_options` takes them."""
    return {flag.replace("-", "_"): getattr(args, flag.replace("-", "_")) for flag in flags}
