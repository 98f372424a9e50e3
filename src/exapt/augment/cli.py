"""`exapt augment DATA --method mlm:MODEL`: new labelled rows by masked-LM infilling of the
training split's real rows (docs/augment.md), for `exapt fit --synthetic FILE`.

Only the training split is augmented, split exactly as `fit` splits it with the same
options (--seed, --n-per-class, --test, --val-fraction...), so no validation or test row
is ever a source. A new row that equals any row of the data (or of the --test file),
exactly or token for token (an uncased tokenizer lower-cases), or an earlier new row, is
dropped and drawn again (up to DRAWS rounds). The output is a CSV with the data's text
and label columns and `source_row`, the real row's 1-based number in DATA.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from ..config import FitConfig
from ..data import fit_splits, load_data, load_table
from ..data.synthetic import SOURCE_ROW, text_column
from ..errors import ExaptError
from ..files import atomic_write_text
from ..options import add_options, option_values
from ..tasks import Task
from .infill import decode, infill, load_masked_lm, masked_positions, token_ids

DRAWS = 4   # rounds of drawing again for rows whose draws were duplicates
SPLITS = ("text", "label", "test", "n-per-class", "seed", "val-fraction", "test-fraction", "max-test")


def add_parser(sub) -> None:
    p = sub.add_parser("augment", help="synthetic labelled rows by masked-LM infilling -> a file for fit --synthetic",
                       description="Mask a fraction of the tokens of each training row and sample replacements from "
                                   "a masked LM; the new rows keep their source row's label. Split options as in fit: "
                                   "the same ones make the same training split.")
    p.add_argument("data", help="file or built-in name (the same as fit's)")
    p.add_argument("--method", default="mlm", metavar="mlm[:MODEL]",
                   help="mlm:MODEL, MODEL an exapt pretrain folder (text: continued on your domain) or antiberty")
    p.add_argument("--per-example", type=int, default=4, help="new rows per real training row (default: 4)")
    p.add_argument("--mask-fraction", type=float, default=0.15, help="share of a row's tokens replaced (default: 0.15)")
    p.add_argument("--out", help="CSV to write (default: DATA's name + -mlm.csv in this folder)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("--quiet", action="store_true")
    add_options(p, *SPLITS)


def run(a: argparse.Namespace) -> None:
    method, _, model = a.method.partition(":")
    if method != "mlm":
        raise ExaptError(f"--method {a.method!r}: the only method is mlm[:MODEL] (masked-LM infilling)")
    if not 1 <= a.per_example <= 100:
        raise ExaptError(f"--per-example must be between 1 and 100 (got {a.per_example})")
    if not 0 < a.mask_fraction <= 1:
        raise ExaptError(f"--mask-fraction must be in (0, 1] (got {a.mask_fraction})")
    if a.batch_size < 1:
        raise ExaptError(f"--batch-size must be >= 1 (got {a.batch_size})")
    out = Path(a.out or f"{Path(a.data).stem}-mlm.csv")
    if out.is_dir():
        raise ExaptError(f"--out {out} is a folder; give a CSV file name")
    if out.exists() and not a.overwrite:
        raise ExaptError(f"{out} exists; pass --overwrite to replace it")
    if not out.parent.is_dir():
        raise ExaptError(f"--out {out}: folder {out.parent} does not exist")
    cfg = FitConfig.from_options(a.data, **option_values(a, *SPLITS))
    frame, counts = augment(cfg, model or None, a.per_example, a.mask_fraction, a.seed, a.batch_size)
    atomic_write_text(out, frame.to_csv(index=False))
    if not a.quiet:
        print(f"{len(frame)} synthetic rows from {counts['sources']} training rows ({counts['duplicates']} duplicate "
              f"draws dropped, {counts['short']} rows short of {a.per_example}) -> {out}")


def augment(cfg: FitConfig, model: str | None, per_example: int, fraction: float, seed: int,
            batch_size: int = 32) -> tuple[pd.DataFrame, dict]:
    """(the synthetic rows, counts) for the training split `cfg.data` describes."""
    text, label = text_column(cfg.data), cfg.data.label
    table = load_table(cfg.data)
    if table.kind != "text":
        raise ExaptError(f"augment infills text and sequences; {cfg.data.source} holds {table.kind}")
    kind = Task.from_labels(cfg.task, table.labels, table.source).kind
    train, _, test = fit_splits(cfg.data, table, kind, load_data)
    mlm = load_masked_lm(model)
    real = [token_ids(mlm, str(x)) for x in train.inputs]
    if not any(real):
        raise ExaptError(f"{cfg.data.source}: the training rows have no tokens to mask")
    known = {str(x) for t in (table, test) for x in t.inputs}
    known_ids = {tuple(token_ids(mlm, x)) for x in known}
    rng, gen = np.random.default_rng(seed), torch.Generator().manual_seed(seed)
    made: list[list[str]] = [[] for _ in real]
    duplicates = 0
    for _ in range(DRAWS):
        todo = [(i, per_example - len(made[i])) for i in range(len(real)) if real[i] and len(made[i]) < per_example]
        if not todo:
            break
        rows = [i for i, k in todo for _ in range(k)]
        masks = [masked_positions(len(real[i]), fraction, rng) for i in rows]
        for i, ids in zip(rows, infill(mlm, [real[i] for i in rows], masks, gen, batch_size)):
            new = decode(mlm, ids)
            key = tuple(token_ids(mlm, new))
            if new in known or key in known_ids or not new.strip():
                duplicates += 1
                continue
            known.add(new)
            known_ids.add(key)
            made[i].append(new)
    out = pd.DataFrame([{text: new, label: train.labels[i], SOURCE_ROW: int(train.rows[i])}
                        for i in range(len(real)) for new in made[i]], columns=[text, label, SOURCE_ROW])
    return out, {"sources": sum(1 for ids in real if ids), "duplicates": duplicates,
                 "short": sum(1 for i, m in enumerate(made) if real[i] and len(m) < per_example), "model": mlm.name}
