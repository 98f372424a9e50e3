"""Behaviour tests for exapt.data: readers, column selection, splits, built-ins."""

from __future__ import annotations

import os

from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from exapt.data import (
    BUILTINS,
    Table,
    load_data,
    read_table,
    sample_per_class,
    select_columns,
    stratified_split,
)
from exapt.data import builtin as builtin_mod
from exapt.errors import ExaptError

# `make test` unpacks the Debian data packages into .cache/debian and exports this variable.
DEB_ROOT = Path(os.environ.get("EXAPT_DEBIAN_ROOT", Path(__file__).resolve().parents[1] / ".cache" / "debian"))
SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "tweets"  # ../shared beside the checkout

ROWS = [
    {"text": "great phone", "label": "positive"},
    {"text": "NA", "label": "negative"},          # text that pandas would call NaN
    {"text": "null", "label": " neutral "},       # label gets stripped
    {"text": 'he said "hi", then left', "label": "neutral"},
]


def _raises(fn, *parts: str) -> str:
    with pytest.raises(ExaptError) as ei:
        fn()
    msg = str(ei.value)
    assert "\n" not in msg, msg
    for p in parts:
        assert p in msg, f"{p!r} not in {msg!r}"
    return msg


def _write(tmp_path: Path, name: str, content: str | bytes) -> Path:
    p = tmp_path / name
    if isinstance(content, bytes):
        p.write_bytes(content)
    else:
        p.write_text(content, encoding="utf-8")
    return p


# ---------------------------------------------------------------- readers: round trips

@pytest.mark.parametrize("fmt", ["csv", "tsv", "jsonl", "ndjson", "json", "parquet"])
def test_each_format_round_trips(tmp_path, fmt):
    df = pd.DataFrame(ROWS)
    p = tmp_path / f"d.{fmt}"
    if fmt == "csv":
        df.to_csv(p, index=False)
    elif fmt == "tsv":
        df.to_csv(p, sep="\t", index=False)
    elif fmt in ("jsonl", "ndjson"):
        df.to_json(p, orient="records", lines=True)
    elif fmt == "json":
        df.to_json(p, orient="records")
    else:
        df.to_parquet(p)
    t = load_data(p)
    assert t.kind == "text" and len(t) == 4
    assert t.inputs == [r["text"] for r in ROWS]
    assert t.labels == ["positive", "negative", "neutral", "neutral"]
    assert t.rows.tolist() == [1, 2, 3, 4]
    assert t.source == str(p)


def test_csv_keeps_na_text_and_quoted_newlines(tmp_path):
    p = _write(tmp_path, "d.csv", 'text,label\nNA,a\n"two\nlines",b\n\nnull,a\n')
    df = read_table(p)
    assert df["text"].tolist() == ["NA", "two\nlines", "null"]
    assert load_data(p).labels == ["a", "b", "a"]


def test_utf8_bom_and_header_spaces(tmp_path):
    p = _write(tmp_path, "d.csv", "\ufefftext, label\nhéllo wörld,x\n")
    t = load_data(p)
    assert t.inputs == ["héllo wörld"] and t.labels == ["x"]


# ---------------------------------------------------------------- readers: bad input

def test_missing_file_and_directory(tmp_path):
    _raises(lambda: read_table(tmp_path / "nope.csv"), "data file not found", "nope.csv")
    _raises(lambda: read_table(tmp_path), "directory", str(tmp_path))


def test_unknown_extension_lists_supported(tmp_path):
    p = _write(tmp_path, "d.xlsx", "x")
    _raises(lambda: read_table(p), "d.xlsx", ".xlsx", ".csv", ".tsv", ".jsonl", ".parquet")


@pytest.mark.parametrize("name,content", [
    ("e.csv", ""), ("e.csv", "\n\n  \n"), ("e.jsonl", "\n"), ("e.parquet", b""),
])
def test_empty_file(tmp_path, name, content):
    p = _write(tmp_path, name, content)
    _raises(lambda: read_table(p), "empty", name)


def test_header_only_has_no_rows(tmp_path):
    p = _write(tmp_path, "h.csv", "text,label\n")
    _raises(lambda: read_table(p), "h.csv", "no data rows")
    p = _write(tmp_path, "h.json", "[]")
    _raises(lambda: read_table(p), "h.json", "no data rows")


def test_non_utf8_names_file_and_line(tmp_path):
    p = _write(tmp_path, "bad.csv", b"text,label\nok,positive\nhello \xff,positive\n")
    _raises(lambda: read_table(p), "bad.csv", "line 3", "0xff", "UTF-8")
    p = _write(tmp_path, "bad2.csv", b"text,label\nhello \xff,positive\n")
    _raises(lambda: load_data(p), "bad2.csv", "line 2", "re-save")


def test_utf16_is_named(tmp_path):
    p = _write(tmp_path, "u16.tsv", "text\tlabel\nhi\tx\n".encode("utf-16"))
    _raises(lambda: read_table(p), "u16.tsv", "UTF-16")


def test_broken_json_line_named(tmp_path):
    p = _write(tmp_path, "d.jsonl", '{"text": "a", "label": "x"}\n\n{"text": "b", lab\n')
    _raises(lambda: read_table(p), "d.jsonl", "line 3", "not valid JSON")
    p = _write(tmp_path, "d2.jsonl", '{"text": "a"}\n[1, 2]\n')
    _raises(lambda: read_table(p), "d2.jsonl", "line 2", "object")


def test_json_must_be_records(tmp_path):
    p = _write(tmp_path, "d.json", '{"text": ["a"], "label": ["x"]}')
    _raises(lambda: read_table(p), "d.json", "array of records")
    p = _write(tmp_path, "d2.json", '[{"text": "a"},\n {"text": ]')
    _raises(lambda: read_table(p), "d2.json", "line 2", "not valid JSON")


def test_not_parquet(tmp_path):
    p = _write(tmp_path, "d.parquet", "text,label\na,b\n")
    _raises(lambda: read_table(p), "d.parquet", "not a readable Parquet file")


def test_ragged_and_badly_quoted_csv(tmp_path):
    p = _write(tmp_path, "r.csv", "text,label\na,x\nb,y,extra\n")
    _raises(lambda: read_table(p), "r.csv", "line 3", "3 fields", "header has 2")
    p = _write(tmp_path, "q.csv", 'text,label\n"quoted" tail,x\n')
    _raises(lambda: read_table(p), "q.csv", "line 2", "malformed CSV")
    p = _write(tmp_path, "dup.csv", "text,text\na,b\n")
    _raises(lambda: read_table(p), "dup.csv", "'text' appears twice")


# ---------------------------------------------------------------- select_columns

def _df(**cols):
    return pd.DataFrame({k: pd.Series(v, dtype=object) for k, v in cols.items()})


def test_missing_columns_are_named_with_available():
    df = _df(body=["a"], y=["x"])
    _raises(lambda: select_columns(df, source="s.csv"), "s.csv", "no 'text' column",
            "body, y")
    _raises(lambda: select_columns(df, source="s.csv", text="Body"), "'Body'",
            "available: body, y", "did you mean 'body'")
    _raises(lambda: select_columns(df, source="s.csv", text="body"), "label column 'label'",
            "body, y")
    t = select_columns(df, source="s.csv", text="body", require_label=False)
    assert t.labels is None and t.inputs == ["a"]
    _raises(lambda: select_columns(df, source="s", text="body", features="y"), "choose one")


def test_empty_text_names_row_and_column():
    df = _df(text=["fine", "  \t", "ok"], label=["a", "b", "c"])
    _raises(lambda: select_columns(df, source="t.csv"), "t.csv", "row 2", "'text'", "empty")
    df = _df(text=["fine", None], label=["a", "b"])
    _raises(lambda: select_columns(df, source="t.json"), "row 2", "'text'")


def test_missing_label_names_row(tmp_path):
    p = _write(tmp_path, "l.csv", "text,label\na,x\nb,  \nc,y\n")
    _raises(lambda: load_data(p), "l.csv", "row 2", "'label'", "empty")
    p = _write(tmp_path, "l.jsonl", '{"text": "a", "label": "x"}\n{"text": "b"}\n')
    _raises(lambda: load_data(p), "l.jsonl", "row 2", "missing")
    with pytest.warns(UserWarning, match="row 2"):
        assert load_data(p, require_label=False).labels is None


def test_multiple_text_columns_joined():
    df = _df(q=["what?", "why?"], a=["this", "that"], label=["1", "0"])
    t = select_columns(df, source="s", text=["q", "a"])
    assert t.inputs == ["what? \n this", "why? \n that"]
    assert t.labels == ["1", "0"]  # numeric-looking labels stay strings
    assert select_columns(df, source="s", text="q, a").inputs == t.inputs


def test_features_from_csv(tmp_path):
    p = _write(tmp_path, "f.csv", "x0,x1,x2,label\n1,2.5,-3e2,a\n 4 ,5,6,b\n")
    t = load_data(p, features="x0,x2")
    assert t.kind == "features" and t.inputs.dtype == np.float32
    np.testing.assert_array_equal(t.inputs, [[1, -300], [4, 6]])
    assert t.feature_names == ["x0", "x2"] and t.labels == ["a", "b"]
    assert load_data(p, features=["x1"]).inputs[:, 0].tolist() == [2.5, 5.0]


@pytest.mark.parametrize("cell,why", [
    ("", "empty"), ("abc", "'abc' is not a number"), ("NaN", "not a finite number"),
    ("1e99", "too large"),
])
def test_bad_feature_cell_names_row_and_column(tmp_path, cell, why):
    p = _write(tmp_path, "f.csv", f"x0,x1,label\n1,2,a\n3,{cell},b\n")
    _raises(lambda: load_data(p, features="x0,x1"), "f.csv", "row 2", "'x1'", why)


def test_nan_in_parquet_feature_column(tmp_path):
    p = tmp_path / "f.parquet"
    pd.DataFrame({"v": [1.0, 2.0, np.nan], "label": ["a", "b", "c"]}).to_parquet(p)
    _raises(lambda: load_data(p, features=["v"]), "f.parquet", "row 3", "'v'", "NaN")


def test_label_also_input_is_rejected():
    df = _df(text=["a"], label=["x"])
    _raises(lambda: select_columns(df, source="s", text="label"), "both an input")


def test_table_subset_keeps_rows():
    t = Table(["a", "b", "c"], ["x", "y", "x"], "text", "s", np.array([1, 2, 3]))
    s = t.subset([2, 0])
    assert s.inputs == ["c", "a"] and s.labels == ["x", "x"] and s.rows.tolist() == [3, 1]
    f = Table(np.eye(3, dtype=np.float32), None, "features", "s", np.arange(1, 4))
    assert f.subset(np.array([False, True, True])).inputs.shape == (2, 3)


# ---------------------------------------------------------------- splits

LABELS = ["a"] * 50 + ["b"] * 30 + ["c"] * 17 + ["d"] * 2 + ["e"]
FR = {"train": 0.7, "val": 0.1, "test": 0.2}


def test_stratified_split_proportions_and_determinism():
    parts = stratified_split(LABELS, FR, seed=3)
    allidx = np.concatenate(list(parts.values()))
    assert sorted(allidx.tolist()) == list(range(len(LABELS)))  # a partition
    sizes = {k: len(v) for k, v in parts.items()}
    assert sizes == {"train": 70, "val": 10, "test": 20}
    counts = Counter(LABELS)
    for name, idx in parts.items():
        got = Counter(LABELS[i] for i in idx)
        for cls in ("a", "b", "c"):
            assert abs(got[cls] - counts[cls] * FR[name]) <= 1, (name, cls, got)
    train = Counter(LABELS[i] for i in parts["train"])
    assert train["d"] >= 1
    again = stratified_split(LABELS, FR, seed=3)
    assert all(np.array_equal(parts[k], again[k]) for k in FR)
    other = stratified_split(LABELS, FR, seed=4)
    assert not np.array_equal(parts["test"], other["test"])


def test_every_class_with_two_examples_reaches_train():
    labels = ["x"] * 2 + ["y"] * 2 + ["z"] * 40
    parts = stratified_split(labels, {"train": 0.2, "test": 0.8}, seed=0)
    got = Counter(labels[i] for i in parts["train"])
    assert got["x"] >= 1 and got["y"] >= 1


def test_zero_fraction_and_regression_fallback():
    parts = stratified_split(LABELS, {"train": 1.0, "val": 0.0}, seed=0)
    assert len(parts["val"]) == 0 and len(parts["train"]) == 100
    y = [float(i) / 10 for i in range(20)]
    parts = stratified_split(y, {"train": 0.75, "test": 0.25}, seed=1)
    assert (len(parts["train"]), len(parts["test"])) == (15, 5)
    multi = [["a", "b"], ["a"]] * 5
    parts = stratified_split(multi, {"train": 0.6, "test": 0.4}, seed=1)
    assert (len(parts["train"]), len(parts["test"])) == (6, 4)


def test_bad_fractions():
    _raises(lambda: stratified_split(LABELS, {"train": 0.7, "test": 0.2}, 0), "sum to 1",
            "train=0.7")
    _raises(lambda: stratified_split(LABELS, {"train": 1.2, "test": -0.2}, 0), "'train'")


def test_sample_per_class_nested_and_balanced():
    labels = ["a"] * 40 + ["b"] * 25 + ["c"] * 30
    s8 = sample_per_class(labels, 8, seed=0)
    s16 = sample_per_class(labels, 16, seed=0)
    assert Counter(labels[i] for i in s8) == {"a": 8, "b": 8, "c": 8}
    assert Counter(labels[i] for i in s16) == {"a": 16, "b": 16, "c": 16}
    assert set(s8) <= set(s16)
    assert np.array_equal(s8, sample_per_class(labels, 8, seed=0))
    assert not np.array_equal(s8, sample_per_class(labels, 8, seed=1))


def test_sample_per_class_small_class_warns():
    labels = ["a"] * 20 + ["rare"] * 3
    with pytest.warns(UserWarning, match="'rare' has only 3"):
        s = sample_per_class(labels, 5, seed=0)
    assert Counter(labels[i] for i in s) == {"a": 5, "rare": 3}
    _raises(lambda: sample_per_class(labels, 0, seed=0), ">= 1")


# ---------------------------------------------------------------- built-ins

@pytest.fixture
def debian(monkeypatch):
    if not (DEB_ROOT / "usr/lib/R/site-library").is_dir():
        pytest.skip(f"unpacked Debian R packages not found at {DEB_ROOT}")
    monkeypatch.setenv("EXAPT_DEBIAN_ROOT", str(DEB_ROOT))


def test_builtin_tweets():
    t = load_data("tweets")
    assert t.kind == "text" and t.source == "tweets" and len(t) == 37185
    assert Counter(t.labels) == {"negative": 15954, "neutral": 14424, "positive": 6807}
    assert len(set(t.inputs)) == len(t)
    assert all(s == " ".join(s.split()) for s in t.inputs[:2000])


def test_builtin_digits():
    t = load_data("digits")
    assert t.kind == "features" and t.inputs.shape == (1797, 64)
    assert t.inputs.dtype == np.float32 and sorted(set(t.labels)) == list("0123456789")


def test_builtin_promoters(debian):
    t = load_data("promoters")
    assert len(t) == 106 and Counter(t.labels) == {"+": 53, "-": 53}
    assert {len(s) for s in t.inputs} == {57} and set("".join(t.inputs)) == set("ACGT")


def test_builtin_splice(debian):
    t = load_data("splice")
    assert len(t) == 3186 and Counter(t.labels) == {"n": 1654, "ei": 767, "ie": 765}
    assert {len(s) for s in t.inputs} == {60} and set("".join(t.inputs)) == set("ACGT")


def test_missing_debian_package_says_what_to_install(monkeypatch, tmp_path):
    monkeypatch.setattr(builtin_mod, "debian_roots", lambda: [tmp_path])
    builtin_mod._promoters.cache_clear()
    _raises(lambda: load_data("promoters"), "'promoters'", "r-cran-kernlab",
            "apt-get download r-cran-kernlab", "dpkg -x")
    builtin_mod._promoters.cache_clear()


def test_unknown_source_lists_builtins():
    msg = _raises(lambda: load_data("tweeets"), "data file not found: tweeets",
                  "tweets, digits, promoters, splice")
    assert "did you mean 'tweets'" in msg
    _raises(lambda: load_data("tweets", text="body"), "option text", "built-in")
    assert set(BUILTINS) == {"tweets", "digits", "promoters", "splice", "tweets-airline", "tweets-self-driving",
                             "tweets-deflategate", "tweets-apple", "amp-tm", "amp-uniprot", "rrna16s",
                             "rrna16s-taxonomy", "mnist", "fashion-mnist", "optdigits", "mnist-8x8"}


def test_file_wins_over_builtin_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _write(tmp_path, "digits", "x")  # no extension: read_table must reject it
    _raises(lambda: load_data("digits"), "unsupported file type")


# ---------------------------------------------------------------- shared fixed splits

@pytest.mark.skipif(not SHARED.is_dir(), reason=f"{SHARED} not present")
def test_shared_tweet_splits_load_as_plain_csv():
    train = load_data(SHARED / "train_n8_s0.csv")
    assert len(train) == 24 and Counter(train.labels) == {
        "negative": 8, "neutral": 8, "positive": 8}
    test = load_data(str(SHARED / "test.csv"))
    assert len(test) == 1500 and len(set(test.labels)) == 3
