"""Data loading for exapt: files or built-in data sets -> a validated `Table`.

Why one entry point: the CLI and the Python API accept the same `source` string,
which is either a path or the name of a built-in data set, and every problem with it
surfaces as a one-line `ExaptError` that names the file, row, column or option.

    from exapt.data import load_data, stratified_split, sample_per_class
    table = load_data("reviews.csv", text="body", label="stars")
    parts = stratified_split(table.labels, {"train": 0.8, "val": 0.1, "test": 0.1}, seed=0)
    train = table.subset(parts["train"])
"""

from __future__ import annotations

import difflib
import os
from pathlib import Path
from typing import Sequence

from exapt.data.builtin import BUILTINS, is_builtin, load_builtin
from exapt.data.columns import Table, select_columns
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
    "read_table",
    "sample_per_class",
    "select_columns",
    "stratified_split",
]


def load_data(source: str | os.PathLike, *, text: str | Sequence[str] | None = None,
              label: str | None = "label",
              features: str | Sequence[str] | None = None,
              require_label: bool = True) -> Table:
    """Load a data file (.csv .tsv .jsonl .ndjson .json .parquet) or a built-in set.

    A file that exists wins over a built-in of the same name. For a built-in data set
    the inputs and labels are fixed, so `text` and `features` must be left unset.
    """
    path = Path(source)
    if path.exists():
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
        return load_builtin(source)
    names = ", ".join(BUILTINS)
    hint = ""
    close = difflib.get_close_matches(str(source).strip().lower(), list(BUILTINS), n=1)
    if close and not path.suffix:
        hint = f"; did you mean {close[0]!r}?"
    raise ExaptError(f"data file not found: {source} (built-in data sets: {names}){hint}")
