"""Turn a raw DataFrame into a `Table`: the inputs, the labels, and where each came from.

Why a separate step from reading: the reader only knows the file; which columns are
the input and the label is the user's choice, and nearly all user mistakes (a typo in
a column name, an empty tweet on row 812, "n/a" in a feature column) are found here.
Every check names the source, the 1-based data row and the column, so the user can
open the file and fix it.

Labels stay raw (stripped strings, even when they look numeric): whether "1", "2", "3"
are classes or a regression target is the task's decision, not the loader's.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import pandas as pd

from exapt.errors import ExaptError

#: Several text columns (e.g. a sentence pair) are joined with this separator.
TEXT_JOIN = " \n "

_MAX_LISTED = 20


@dataclass
class Table:
    """Model-ready data plus provenance for error messages.

    inputs: list[str] (kind "text"), float32 array [N, F] (kind "features"), or float32
        array [N, C, H, W] with pixels in [0, 1] (kind "image"; see exapt.data.images).
    labels: one raw label per row (a stripped str, or a list of str for a JSON/Parquet
        list cell), or None when the data has no label column.
    kind: "text", "features" or "image".
    source: the file path or built-in data set name.
    rows: 1-based data row numbers into the original source, one per row, so that a
        message about row i of a subset can still point at the right line.
    feature_names: column names of the feature matrix (kind "features"), else None.
    names: a name per row where rows have one (the files of an image folder), else None.
    """

    inputs: Any
    labels: list | None
    kind: str
    source: str
    rows: np.ndarray
    feature_names: list[str] | None = field(default=None)
    names: list[str] | None = field(default=None)

    def __post_init__(self) -> None:
        if self.kind not in ("text", "features", "image"):
            raise ValueError(f"Table.kind must be 'text', 'features' or 'image', not {self.kind!r}")
        self.rows = np.asarray(self.rows, dtype=np.int64)
        n = len(self.inputs)
        if (len(self.rows) != n or (self.labels is not None and len(self.labels) != n)
                or (self.names is not None and len(self.names) != n)):
            raise ValueError("Table inputs, labels, rows and names must have the same length")

    def __len__(self) -> int:
        return len(self.inputs)

    def subset(self, indices: Sequence[int] | np.ndarray) -> "Table":
        """A new Table with the rows at `indices` (positions, or a boolean mask)."""
        idx = np.asarray(indices)
        if idx.dtype == bool:
            idx = np.flatnonzero(idx)
        idx = idx.astype(np.int64, copy=False)
        if self.kind in ("features", "image"):
            inputs = self.inputs[idx]
        else:
            inputs = [self.inputs[i] for i in idx]
        labels = None if self.labels is None else [self.labels[i] for i in idx]
        return Table(inputs, labels, self.kind, self.source, self.rows[idx],
                     self.feature_names, None if self.names is None else [self.names[i] for i in idx])


def _listing(columns: Sequence[str]) -> str:
    cols = [str(c) for c in columns]
    shown = ", ".join(cols[:_MAX_LISTED])
    if len(cols) > _MAX_LISTED:
        shown += f", ... ({len(cols) - _MAX_LISTED} more)"
    return shown


def _check_column(df: pd.DataFrame, name: str, source: str, what: str) -> None:
    if name in df.columns:
        return
    hint = ""
    close = [c for c in df.columns if str(c).lower() == name.lower()]
    if close:
        hint = f"; did you mean {close[0]!r}?"
    raise ExaptError(
        f"{source}: no {what} column {name!r} (available: {_listing(df.columns)}){hint}"
    )


def _column_list(spec: str | Sequence[str], df: pd.DataFrame, source: str,
                 option: str) -> list[str]:
    """Column names from a name, a comma-separated string, or a list."""
    if isinstance(spec, str):
        names = [spec] if spec in df.columns else [s.strip() for s in spec.split(",")]
    else:
        names = [str(s).strip() for s in spec]
    names = [n for n in names if n]
    if not names:
        raise ExaptError(f"option {option}: no column names given")
    dup = {n for n in names if names.count(n) > 1}
    if dup:
        raise ExaptError(f"option {option}: column {sorted(dup)[0]!r} is listed twice")
    for n in names:
        _check_column(df, n, source, "text" if option == "text" else "feature")
    return names


def _missing(v: Any) -> bool:
    if v is None:
        return True
    if isinstance(v, (list, tuple, dict, np.ndarray)):
        return False
    try:
        return bool(pd.isna(v))
    except (TypeError, ValueError):
        return False


def _text_values(df: pd.DataFrame, col: str, source: str) -> list[str]:
    out: list[str] = []
    for i, v in enumerate(df[col].tolist(), start=1):
        if _missing(v):
            v = ""
        elif isinstance(v, (list, tuple, dict, np.ndarray)):
            raise ExaptError(
                f"{source}: row {i}, column {col!r}: expected text, "
                f"got a {type(v).__name__}"
            )
        elif not isinstance(v, str):
            v = str(v)
        if not v.strip():
            raise ExaptError(f"{source}: row {i}, column {col!r}: text is empty")
        out.append(v)
    return out


def _feature_matrix(df: pd.DataFrame, cols: list[str], source: str) -> np.ndarray:
    mat = np.empty((len(df), len(cols)), dtype=np.float32)
    for j, col in enumerate(cols):
        raw = df[col]
        if raw.dtype == object or pd.api.types.is_string_dtype(raw.dtype):
            raw = raw.map(lambda v: v.strip() if isinstance(v, str) else v)
        try:
            num = pd.to_numeric(raw, errors="coerce")
            vals = np.asarray(num.to_numpy(dtype=np.float64, na_value=np.nan))
        except (TypeError, ValueError):
            vals = np.full(len(df), np.nan)
        with np.errstate(over="ignore"):
            col32 = vals.astype(np.float32)
        bad = np.flatnonzero(~np.isfinite(col32))
        if bad.size:
            i = int(bad[0])
            orig = df[col].iloc[i]
            if isinstance(orig, (float, np.floating)) and math.isnan(orig):
                why = "value is NaN (missing)"
            elif _missing(orig) or (isinstance(orig, str) and not orig.strip()):
                why = "value is empty"
            elif np.isfinite(vals[i]):
                why = f"value {orig!r} is too large for float32"
            elif isinstance(orig, str) and orig.strip().lower() in ("nan", "inf", "-inf",
                                                                    "infinity"):
                why = f"value {orig!r} is not a finite number"
            else:
                why = f"value {orig!r} is not a number"
            extra = f" ({bad.size} bad rows in this column)" if bad.size > 1 else ""
            raise ExaptError(f"{source}: row {i + 1}, column {col!r}: {why}{extra}")
        mat[:, j] = col32
    return mat


def _label_value(v: Any, row: int, col: str, source: str) -> str | list[str]:
    if isinstance(v, (list, tuple, np.ndarray)):
        items = [_label_value(x, row, col, source) for x in list(v)]
        if any(isinstance(x, list) for x in items):
            raise ExaptError(f"{source}: row {row}, column {col!r}: nested label lists")
        return items
    if isinstance(v, dict):
        raise ExaptError(f"{source}: row {row}, column {col!r}: label is a JSON object")
    if _missing(v):
        raise ExaptError(f"{source}: row {row}, column {col!r}: label is missing")
    if isinstance(v, (bool, np.bool_)):
        return "true" if v else "false"
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    if isinstance(v, (float, np.floating)):
        return str(float(v))
    s = str(v).strip()
    if not s:
        raise ExaptError(f"{source}: row {row}, column {col!r}: label is empty")
    return s


def _labels(df: pd.DataFrame, col: str, source: str, required: bool) -> list | None:
    try:
        return [_label_value(v, i, col, source)
                for i, v in enumerate(df[col].tolist(), start=1)]
    except ExaptError as e:
        if required:
            raise
        warnings.warn(f"ignoring the labels: {e}", stacklevel=3)
        return None


def select_columns(df: pd.DataFrame, *, source: str,
                   text: str | Sequence[str] | None = None,
                   label: str | None = "label",
                   features: str | Sequence[str] | None = None,
                   require_label: bool = True) -> Table:
    """Pick the input and label columns of `df` and validate every row.

    text: a column name, a comma-separated string or a list; several columns are
        joined with " \\n ". features: a comma-separated string or a list of numeric
        columns. Give at most one of them; with neither, the column "text" is used.
    label: the label column. With require_label=False a missing label column gives
        labels=None, and a present one with bad cells is ignored with a warning.
    """
    source = str(source)
    if text is not None and features is not None:
        raise ExaptError("options text and features both given; choose one")
    if text is None and features is None:
        if "text" not in df.columns:
            raise ExaptError(
                f"{source}: no 'text' column; choose the input with the text or "
                f"features option (available: {_listing(df.columns)})"
            )
        text = "text"

    if features is not None:
        input_cols = _column_list(features, df, source, "features")
    else:
        input_cols = _column_list(text, df, source, "text")

    labels = _label_values(df, label, input_cols, source, require_label)
    rows = np.arange(1, len(df) + 1, dtype=np.int64)
    if features is not None:
        mat = _feature_matrix(df, input_cols, source)
        return Table(mat, labels, "features", source, rows, list(input_cols))
    parts = [_text_values(df, c, source) for c in input_cols]
    inputs = parts[0] if len(parts) == 1 else [TEXT_JOIN.join(t) for t in zip(*parts)]
    return Table(inputs, labels, "text", source, rows)


def _label_values(df: pd.DataFrame, label, input_cols, source: str, require_label: bool):
    """The label column's values, or None when no label is named (or, with
    require_label=False, none is present)."""
    if label is None or (isinstance(label, str) and not label.strip()):
        if require_label:
            raise ExaptError("option label: a label column is required")
        return None
    label = str(label).strip()
    if label in input_cols:
        raise ExaptError(
            f"{source}: column {label!r} is both an input and the label column"
        )
    if label in df.columns:
        return _labels(df, label, source, require_label)
    if require_label:
        _check_column(df, label, source, "label")
    return None
