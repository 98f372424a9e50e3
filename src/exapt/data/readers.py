"""Read a user's data file into a DataFrame, or fail with one line that says why.

Why this is not just `pandas.read_*`: the errors pandas and pyarrow raise for bad
input are tracebacks about tokenizers and buffers, and they rarely name the line.
Users of a CLI need "train.csv: line 12 has 3 fields but the header has 2", so each
format is parsed here with the standard library where that gives better errors
(CSV/TSV via `csv`, JSON via `json`) and only Parquet goes through pandas.

Text semantics: CSV/TSV cells are kept as the exact strings in the file. A tweet that
reads "NA" or "null" must stay a tweet, not become NaN, so nothing is converted here;
`columns.select_columns` decides what is a number.

Encoding: text files must be UTF-8 (a UTF-8 BOM is accepted). We decode the bytes
ourselves so that a bad byte is reported with its line number instead of being
silently read as latin-1 mojibake.
"""

from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path

import pandas as pd

from exapt.errors import ExaptError

#: extension -> format name; the keys are what `read_table` accepts.
FORMATS = {
    ".csv": "csv",
    ".tsv": "tsv",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "json",
    ".parquet": "parquet",
}

# Long texts (whole documents in one cell) exceed csv's default 128 KiB field limit.
_FIELD_LIMIT = 64 * 1024 * 1024


def read_table(path: str | os.PathLike) -> pd.DataFrame:
    """Read a .csv, .tsv, .jsonl/.ndjson, .json (array of records) or .parquet file.

    Returns a DataFrame with string column names and a 0-based RangeIndex, so that
    data row number = position + 1. CSV/TSV cells are all `str`. Raises ExaptError
    for a missing file, a directory, an unknown extension, an empty file, a file with
    no data rows, non-UTF-8 text, or malformed content.
    """
    p = Path(path)
    if not p.exists():
        raise ExaptError(f"data file not found: {p}")
    if p.is_dir():
        raise ExaptError(f"data path is a directory, not a file: {p}")
    fmt = FORMATS.get(p.suffix.lower())
    if fmt is None:
        supported = ", ".join(FORMATS)
        raise ExaptError(
            f"{p}: unsupported file type {p.suffix or '(no extension)'!r}; "
            f"supported: {supported}"
        )
    try:
        raw = p.read_bytes()
    except OSError as e:
        raise ExaptError(f"cannot read data file {p}: {e.strerror or e}") from None
    if not raw.strip():
        raise ExaptError(f"data file is empty: {p}")

    if fmt == "parquet":
        df = _read_parquet(p)
    else:
        text = _decode_utf8(raw, p)
        if fmt in ("csv", "tsv"):
            df = _read_delimited(text, p, "\t" if fmt == "tsv" else ",")
        elif fmt == "jsonl":
            df = _read_jsonl(text, p)
        else:
            df = _read_json(text, p)

    if len(df.columns) == 0:
        raise ExaptError(f"{p}: no columns found")
    if len(df) == 0:
        raise ExaptError(f"{p}: no data rows")
    return df


def _decode_utf8(raw: bytes, p: Path) -> str:
    """Strict UTF-8 decode; on failure name the 1-based line of the first bad byte."""
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise ExaptError(f"{p}: file is UTF-16 encoded; re-save it as UTF-8")
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = raw.count(b"\n", 0, e.start) + 1
        bad = raw[e.start : e.start + 1].hex()
        raise ExaptError(
            f"{p}: line {line} is not valid UTF-8 (byte 0x{bad}); "
            f"re-save the file as UTF-8"
        ) from None


def _clean_header(names: list, p: Path) -> list[str]:
    """Strip header names, name blank ones, and reject duplicates."""
    out: list[str] = []
    for i, name in enumerate(names, start=1):
        name = str(name).strip()
        if not name:
            name = f"unnamed_{i}"
        if name in out:
            raise ExaptError(f"{p}: column {name!r} appears twice in the header")
        out.append(name)
    return out


def _read_delimited(text: str, p: Path, delimiter: str) -> pd.DataFrame:
    """CSV/TSV with standard quoting; every cell stays a string, blank lines skipped."""
    kind = "TSV" if delimiter == "\t" else "CSV"
    if csv.field_size_limit() < _FIELD_LIMIT:
        csv.field_size_limit(_FIELD_LIMIT)
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=True)
    header: list[str] | None = None
    header_line = ""
    rows: list[list[str]] = []
    ended = 0  # the line the last complete record ended on: a bad record starts after it
    try:
        for fields in reader:
            start, ended = ended + 1, reader.line_num
            if not fields or (len(fields) == 1 and not fields[0].strip()):
                continue  # blank line
            if "\x00" in "".join(fields):
                raise ExaptError(f"{p}: line {reader.line_num} contains a NUL byte")
            if header is None:
                header, header_line = _clean_header(fields, p), delimiter.join(fields)
                _check_delimiter(header, header_line, p, delimiter)
                continue
            if len(fields) != len(header):
                raise ExaptError(
                    f"{p}: line {reader.line_num} has {len(fields)} fields but the "
                    f"header has {len(header)}; "
                    + (_delimiter_hint(header_line, delimiter) or "quote fields that contain "
                       f"{'tabs' if delimiter == chr(9) else 'commas'}")
                )
            rows.append(fields)
    except csv.Error as e:
        start = ended + 1
        where = (f"line {start}" if start >= reader.line_num else
                 f"line {start} (a quoted field opened there runs on to line {reader.line_num})")
        raise ExaptError(
            f"{p}: malformed {kind} at {where} ({e}); "
            f'fields containing quotes must be quoted, with quotes doubled ("")'
        ) from None
    if header is None:
        raise ExaptError(f"data file is empty: {p}")
    columns = {name: [r[j] for r in rows] for j, name in enumerate(header)}
    return pd.DataFrame(columns, columns=header, dtype=object)


# what else people separate fields with, and what to do about it in exapt
_OTHER_DELIMITERS = {"\t": ("tab", "name the file .tsv"),
                     ";": ("';'", "re-save it comma-separated (quoting fields that contain commas)"),
                     "|": ("'|'", "re-save it comma-separated (quoting fields that contain commas)"),
                     ",": ("comma", "name the file .csv")}


def _delimiter_hint(header_line: str, delimiter: str) -> str:
    """When the header splits better on another character: which, and what to do."""
    counts = {d: header_line.count(d) for d in _OTHER_DELIMITERS if d != delimiter}
    best = max(counts, key=counts.get)
    if counts[best] <= header_line.count(delimiter):
        return ""
    name, fix = _OTHER_DELIMITERS[best]
    expected = "tab" if delimiter == "\t" else "comma"
    return (f"the header looks {name}-separated ({counts[best] + 1} columns), but a .{'tsv' if expected == 'tab' else 'csv'}"
            f" file is read as {expected}-separated: {fix}")


def _check_delimiter(header: list[str], header_line: str, p: Path, delimiter: str) -> None:
    """A one-column header that another delimiter would split: the file's fields are
    separated by something else (a ';' file, or a TSV named .csv)."""
    if len(header) == 1:
        hint = _delimiter_hint(header_line, delimiter)
        if hint:
            raise ExaptError(f"{p}: {hint}")


def _records_frame(records: list[dict], p: Path) -> pd.DataFrame:
    """Build a frame from JSON objects, keeping values as parsed (None for null)."""
    names: dict[str, None] = {}
    for rec in records:
        for k in rec:
            names.setdefault(k, None)
    header = _clean_header(list(names), p)
    columns = {
        new: [rec.get(old) for rec in records] for old, new in zip(names, header)
    }
    return pd.DataFrame(columns, columns=header, dtype=object)


def _read_jsonl(text: str, p: Path) -> pd.DataFrame:
    """One JSON object per line; blank lines are skipped."""
    records: list[dict] = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise ExaptError(
                f"{p}: line {lineno} is not valid JSON ({e.msg} at column {e.colno})"
            ) from None
        if not isinstance(obj, dict):
            raise ExaptError(
                f"{p}: line {lineno} is a JSON {type(obj).__name__}, expected an "
                f'object like {{"text": ..., "label": ...}}'
            )
        records.append(obj)
    if not records:
        raise ExaptError(f"data file is empty: {p}")
    return _records_frame(records, p)


def _read_json(text: str, p: Path) -> pd.DataFrame:
    """A JSON array of objects (records)."""
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as e:
        raise ExaptError(
            f"{p}: not valid JSON at line {e.lineno} column {e.colno} ({e.msg})"
        ) from None
    if not isinstance(obj, list):
        raise ExaptError(
            f"{p}: expected a JSON array of records like "
            f'[{{"text": ..., "label": ...}}, ...], got a JSON {type(obj).__name__}; '
            f"for one object per line use the .jsonl extension"
        )
    for i, rec in enumerate(obj, start=1):
        if not isinstance(rec, dict):
            raise ExaptError(
                f"{p}: record {i} is a JSON {type(rec).__name__}, expected an object"
            )
    if not obj:
        raise ExaptError(f"{p}: no data rows (the JSON array is empty)")
    return _records_frame(obj, p)


def _read_parquet(p: Path) -> pd.DataFrame:
    """Parquet via pandas/pyarrow; any failure becomes one line."""
    try:
        df = pd.read_parquet(p)
    except ImportError as e:
        raise ExaptError(f"{p}: reading Parquet needs pyarrow ({e})") from None
    except Exception as e:  # pyarrow raises many types (ArrowInvalid, OSError, ...)
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ExaptError(f"{p}: not a readable Parquet file ({msg})") from None
    named_index = any(n is not None for n in df.index.names)
    df = df.reset_index(drop=not named_index)  # a named index is data (e.g. an id)
    df.columns = _clean_header(list(df.columns), p)
    return df
