"""Data loading for exapt: files or built-in data sets -> a validated `Table`.

Why one entry point: the CLI and the Python API accept the same `source` string,
which is either a path or the name of a built-in data set, and every problem with it
surfaces as a one-line `ExaptError` that names the file, row, column or option.

    from exapt.data import load_data, stratified_split, sample_per_class
    table = load_data("reviews.csv", text="body", label="stars")
    images = load_data("photos/", image_size=64)        # one sub-folder per class (or DATA.npz)
    parts = stratified_split(table.labels, {"train": 0.8, "val": 0.1, "test": 0.1}, seed=0)
    train = table.subset(parts["train"])
"""

from __future__ import annotations

import difflib
import json
import os
from pathlib import Path
from typing import Sequence

import numpy as np

from exapt.data.builtin import BUILTINS, is_builtin, load_builtin
from exapt.data.columns import Table, select_columns
from exapt.data.images import check_not_image_less, is_image_source, read_images, resize_images
from exapt.data.readers import FORMATS, read_table
from exapt.data.splits import sample_per_class, stratified_split
from exapt.errors import ExaptError

__all__ = [
    "BUILTINS",
    "FORMATS",
    "Table",
    "is_builtin",
    "load_builtin",
    "load_data",
    "load_table",
    "MemoLoader",
    "fit_splits",
    "read_table",
    "sample_per_class",
    "select_columns",
    "stratified_split",
]


def load_data(source: str | os.PathLike, *, text: str | Sequence[str] | None = None,
              label: str | None = "label",
              features: str | Sequence[str] | None = None,
              require_label: bool = True, image_size: int | None = None) -> Table:
    """Load a data file (.csv .tsv .jsonl .ndjson .json .parquet), images (a .npz file
    with arrays x and y, or a folder with one sub-folder of image files per class) or a
    built-in set.

    A file that exists wins over a built-in of the same name. For a built-in data set
    the inputs and labels are fixed, so `text` and `features` must be left unset.
    `image_size` resizes images to image_size x image_size (a folder of images of
    differing sizes needs it).
    """
    path = Path(source)
    if image_size is not None and (isinstance(image_size, bool) or not isinstance(image_size, int)
                                   or image_size < 1):
        raise ExaptError(f"option image_size must be a whole number of pixels >= 1 (got {image_size!r})")
    if path.exists() and is_image_source(path):
        if path.is_dir():
            check_not_image_less(path)
        for option, value in (("text", text), ("features", features)):
            if value is not None:
                raise ExaptError(f"option {option} does not apply to images ({source})")
        x, labels, names = read_images(path, label, image_size, require_label)
        return Table(x, labels, "image", str(source), np.arange(1, len(x) + 1), names=names)
    if path.exists():
        if image_size is not None:
            raise ExaptError(f"option image_size applies to images, not to {source}")
        df = read_table(path)
        return select_columns(df, source=str(source), text=text, label=label,
                              features=features, require_label=require_label)
    if isinstance(source, str) and is_builtin(source):
        for option, value in (("text", text), ("features", features)):
            if value is not None:
                raise ExaptError(
                    f"option {option} does not apply to the built-in data set "
                    f"{source.strip()!r} (its columns are fixed)"
                )
        table = load_builtin(source)
        if image_size is not None:
            if table.kind != "image":
                raise ExaptError(f"option image_size applies to images; {source.strip()!r} holds {table.kind}")
            table.inputs = resize_images(table.inputs, image_size)
        return table
    names = ", ".join(BUILTINS)
    hint = ""
    close = difflib.get_close_matches(str(source).strip().lower(), list(BUILTINS), n=1)
    if close and not path.suffix:
        hint = f"; did you mean {close[0]!r}?"
    raise ExaptError(f"data file not found: {source} (built-in data sets: {names}){hint}")


class MemoLoader:
    """`load_data`, each (file, columns) read once: a compare panel or an auto search reads
    the same table for every cell / candidate."""

    def __init__(self):
        self.tables = {}

    def __call__(self, source, **kw):
        key = (str(source), json.dumps(kw, sort_keys=True, default=str))
        if key not in self.tables:
            self.tables[key] = load_data(source, **kw)
        return self.tables[key]


def load_table(data, loader=load_data) -> Table:
    """The table a `DataConfig` names (its file or built-in, with its columns)."""
    return loader(data.source, text=data.text, label=data.label, features=data.features, image_size=data.image_size)


def fit_splits(data, table: Table, kind: str, loader=load_data) -> tuple[Table, Table, Table]:
    """The (train, val, test) tables of one fit, as `data` (a DataConfig) describes them:
    the test set is `data.test`'s file or a stratified `test_fraction` (capped at
    `max_test`); the rest is sampled to `n_per_class` (classification only) and split
    into train and val. Deterministic in `data.seed`, so every command that needs a
    fit's splits (interpolate, rank, compare, the source side of --init) gets the same."""
    stratify = kind == "classification"
    if data.test:
        test = loader(data.test, text=data.text, label=data.label, features=data.features,
                      image_size=data.image_size)
        pool = table
    else:
        # named "train" so that every class keeps at least one example on the training side
        parts = stratified_split(table.labels, {"train": 1 - data.test_fraction, "test": data.test_fraction},
                                 seed=data.seed, stratify=stratify)
        pool, test_idx = table.subset(parts["train"]), parts["test"]
        if len(test_idx) > data.max_test:
            test_idx = np.sort(np.random.default_rng(data.seed).choice(test_idx, data.max_test, replace=False))
        test = table.subset(test_idx)
    if data.n_per_class:
        if kind != "classification":
            raise ExaptError("--n-per-class needs a single-label classification task")
        pool = pool.subset(sample_per_class(pool.labels, data.n_per_class, data.seed))
    parts = stratified_split(pool.labels, {"train": 1 - data.val_fraction, "val": data.val_fraction},
                             seed=data.seed, stratify=stratify)
    return pool.subset(parts["train"]), pool.subset(parts["val"]), test
