"""The target domain of a fit with `--adapt-to`: loaded, checked and split once.

    exapt fit mnist-8x8 --model mlp --strategy full --adapt-to optdigits --penalty dann

The target rows are split (stratified when they carry labels, with the fit's seed):
- `test`: `test_fraction` of them, labelled, never seen in training: the target test set;
- `unlabelled`: the rest, labels dropped, capped at `max_rows`: what the penalties
  align the source to (dann, coral, mmd) or weigh the source by (importance-weights);
- `val`: `labels` per class drawn from the unlabelled part *with* their labels, only when
  asked for: the "few target labels" that choose the epoch.
A target without a label column gives only `unlabelled` (no target test, no target val).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..data import Table, load_data
from ..data.builtin import is_builtin
from ..data.splits import sample_per_class, stratified_split
from ..errors import ExaptError

SELECTIONS = ("source-val", "weighted-val", "target-labels")


@dataclass
class TargetDomain:
    unlabelled: Table
    test: Table | None
    val: Table | None
    selection: str          # which validation chooses the epoch (one of SELECTIONS)


def resolve_selection(adapt, has_labels: bool) -> str:
    select = adapt.select
    if adapt.labels and not has_labels:
        raise ExaptError(f"--target-labels {adapt.labels}: the --adapt-to data {adapt.data!r} has no labels")
    if select == "auto":
        return "target-labels" if adapt.labels else "source-val"
    if select not in SELECTIONS:
        raise ExaptError(f"--select {select!r}: choose one of {', '.join(SELECTIONS)}")
    if select == "target-labels" and not adapt.labels:
        raise ExaptError("--select target-labels needs --target-labels N (labelled target examples per class)")
    return select


def check_adapt_options(adapt) -> None:
    if not adapt.data:
        if adapt.labels or adapt.select not in ("auto", "source-val"):
            raise ExaptError("--target-labels / --select need --adapt-to TARGET")
        return
    if not 0 <= adapt.test_fraction < 1:
        raise ExaptError(f"--target-test-fraction must be in [0, 1) (got {adapt.test_fraction})")
    if adapt.labels < 0:
        raise ExaptError(f"--target-labels must be >= 0 (got {adapt.labels})")
    if adapt.max_rows < 2:
        raise ExaptError(f"adapt.max_rows must be >= 2 (got {adapt.max_rows})")


def load_target(cfg, source: Table, classes: list[str], loader=load_data) -> TargetDomain | None:
    """The split target domain of `cfg.adapt`, or None without --adapt-to."""
    adapt = cfg.adapt
    check_adapt_options(adapt)
    if not adapt.data:
        return None
    d = cfg.data
    if is_builtin(adapt.data) and not Path(adapt.data).exists():  # a built-in's columns are fixed
        table = loader(adapt.data, require_label=False, image_size=d.image_size)
    else:  # a file: the source's column options name its columns too
        table = loader(adapt.data, text=d.text, label=d.label, features=d.features, require_label=False,
                       image_size=d.image_size)
    if table.kind != source.kind:
        raise ExaptError(f"--adapt-to {adapt.data!r} holds {table.kind} inputs but {source.source!r} holds "
                         f"{source.kind}: both domains must reach the same model")
    if table.kind != "text" and np.shape(table.inputs)[1:] != np.shape(source.inputs)[1:]:
        raise ExaptError(f"--adapt-to {adapt.data!r} inputs have shape {np.shape(table.inputs)[1:]} per row, "
                         f"the source's {np.shape(source.inputs)[1:]}")
    if len(table) < 2:
        raise ExaptError(f"--adapt-to {adapt.data!r} has {len(table)} row(s); it needs at least 2")
    has_labels = table.labels is not None
    selection = resolve_selection(adapt, has_labels)
    if has_labels:
        unknown = sorted({str(y) for y in table.labels} - set(classes))
        if unknown:
            raise ExaptError(f"--adapt-to {adapt.data!r} has label(s) the source does not: {', '.join(unknown[:5])} "
                             f"(source classes: {', '.join(classes)})")
    test = None
    pool = table
    if has_labels and adapt.test_fraction > 0:
        parts = stratified_split(table.labels, {"train": 1 - adapt.test_fraction, "test": adapt.test_fraction},
                                 seed=d.seed, stratify=True)
        pool, test = table.subset(parts["train"]), table.subset(parts["test"])
    val = None
    if adapt.labels:
        val = pool.subset(np.sort(sample_per_class(pool.labels, adapt.labels, d.seed)))
    if len(pool) > adapt.max_rows:
        pool = pool.subset(np.sort(np.random.default_rng([d.seed, 7]).choice(len(pool), adapt.max_rows, replace=False)))
    unlabelled = Table(pool.inputs, None, pool.kind, pool.source, pool.rows, pool.feature_names)
    return TargetDomain(unlabelled, test, val, selection)
