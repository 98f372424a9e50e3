"""Synthetic training rows (`exapt fit --synthetic FILE --synthetic-weight ALPHA`).

A synthetic file (what `exapt augment` writes) holds the data's input and label columns
and `source_row`, the 1-based data row each synthetic row was made from. Here it is read
and checked against the fit's data (its columns and its classes: anything else is one
line, exit 2), and only the rows that may train this fit are kept: those made from a row
of this fit's *training* split (a row made from a validation or test row, e.g. by another
seed's split, would leak it) and whose input is not verbatim a validation or test input.
Validation and test stay real only. The kept rows join the training split with the loss
weight ALPHA each; real rows weigh 1.

The effective sample size per class (issue 22): n_eff = k0 + n_real + ALPHA * n_synth,
with k0 the prior pseudo-count of a class (what a Dirichlet prior on the class
frequencies adds before any data is seen). exapt's fits use no such prior (the decision
rule's class frequencies are the counts themselves), so k0 = 0.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from exapt.data.columns import Table, select_columns
from exapt.data.readers import read_table
from exapt.config import parse_synthetic_weights
from exapt.errors import ExaptError

SOURCE_ROW = "source_row"   # the column naming the real row a synthetic row was made from
K0 = 0.0                    # prior pseudo-count per class in n_eff (none in exapt's fits)


@dataclass
class Synthetic:
    """The synthetic rows a fit may train on (a Table) and what was left out, by reason."""
    table: Table
    path: str
    n_read: int
    dropped: dict = field(default_factory=dict)


def text_column(data) -> str:
    """The one input column a synthetic file (and `exapt augment`) works with."""
    text = data.text if data.text is not None else "text"
    if isinstance(text, (list, tuple)):
        if len(text) != 1:
            raise ExaptError(f"--synthetic and augment take one text column (got {', '.join(text)})")
        text = text[0]
    return str(text)


def load_synthetic(data, train: Table, held_out: list[Table], classes: list[str]) -> Synthetic:
    """The rows of `data.synthetic` (a DataConfig's file) that may join `train`.

    held_out: the validation and test Tables (their inputs are never trained on)."""
    path = str(data.synthetic)
    if train.kind != "text":
        raise ExaptError(f"--synthetic {path}: synthetic rows are for text and sequence inputs "
                         f"(this data holds {train.kind})")
    text = text_column(data)
    frame = read_table(path)
    allowed = [text, data.label, SOURCE_ROW]
    other = [str(c) for c in frame.columns if c not in allowed]
    if other:
        raise ExaptError(f"--synthetic {path}: column {other[0]!r} is not one of the data's ({', '.join(allowed)}); "
                         "is it a synthetic file made for other data?")
    table = select_columns(frame, source=path, text=text, label=data.label)
    unknown = [(i, str(v)) for i, v in enumerate(table.labels) if str(v) not in set(classes)]
    if unknown:
        i, v = unknown[0]
        raise ExaptError(f"--synthetic {path}: row {i + 1} has label {v!r}, not a class of the training data "
                         f"({', '.join(classes[:20])})")
    keep = np.ones(len(table), dtype=bool)
    dropped = {}
    if SOURCE_ROW in frame.columns:
        sources = _source_rows(frame[SOURCE_ROW], path)
        outside = ~np.isin(sources, train.rows)
        dropped["made from a row outside this fit's training split"] = int(outside.sum())
        keep &= ~outside
        table.rows = sources
    seen = {str(x) for t in held_out for x in t.inputs}
    copies = np.array([str(x) in seen for x in table.inputs], dtype=bool) & keep
    dropped["a validation or test input verbatim"] = int(copies.sum())
    keep &= ~copies
    if not keep.any():
        raise ExaptError(f"--synthetic {path}: none of its {len(table)} rows may train this fit "
                         f"({'; '.join(f'{n} {why}' for why, n in dropped.items() if n)}); make it with "
                         "`exapt augment` and the same split options (--seed, --n-per-class, --test...)")
    return Synthetic(table.subset(np.flatnonzero(keep)), path, len(table), {k: v for k, v in dropped.items() if v})


def _source_rows(column, path: str) -> np.ndarray:
    values = []
    for i, v in enumerate(column):
        try:
            number = float(v)
        except (TypeError, ValueError):
            number = float("nan")
        if not np.isfinite(number) or number != int(number) or number < 1:
            raise ExaptError(f"--synthetic {path}: row {i + 1}: {SOURCE_ROW} must be a data row number >= 1 (got {v!r})")
        values.append(int(number))
    return np.asarray(values, dtype=np.int64)


def join(train: Table, synthetic: Synthetic, alpha: float) -> tuple[Table, torch.Tensor | None]:
    """The training split with the synthetic rows after it, and the loss weight per row
    (1 real, ALPHA synthetic). ALPHA = 0 is the real rows alone (no weights): the run
    without synthetic rows, not one that merely ignores them."""
    if alpha == 0:
        return train, None
    s = synthetic.table
    joined = Table(list(train.inputs) + list(s.inputs), list(train.labels) + list(s.labels), train.kind,
                   train.source, np.concatenate([train.rows, s.rows]))
    weights = torch.cat([torch.ones(len(train)), torch.full((len(s),), float(alpha))])
    return joined, weights


def effective_sizes(classes: list[str], real_labels, synthetic: Synthetic, alpha: float) -> dict:
    """Per class: n_real, n_synth and n_eff = k0 + n_real + ALPHA * n_synth."""
    real = [str(v) for v in real_labels]
    synth = [str(v) for v in synthetic.table.labels]
    out = {}
    for c in classes:
        n_real, n_synth = real.count(c), synth.count(c)
        out[c] = {"n_real": n_real, "n_synth": n_synth, "n_eff": K0 + n_real + alpha * n_synth}
    return out


def synthetic_for_fit(data, kind: str, classes, tables: dict):
    """--synthetic: its rows that may train this fit (docs/augment.md), checked before the
    run folder exists; None without --synthetic. `data`: the fit's DataConfig."""
    if not data.synthetic:
        return None
    if kind != "classification":
        raise ExaptError(f"--synthetic needs a single-label classification task (this is {kind})")
    if len(parse_synthetic_weights(data.synthetic_weight)) > 1 and not len(tables["val"]):
        raise ExaptError("--synthetic-weight with several values chooses ALPHA on validation; "
                         "--val-fraction 0 leaves none")
    return load_synthetic(data, tables["train"], [tables["val"], tables["test"]], classes)
