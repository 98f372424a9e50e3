"""Property-based fuzzing of what users type and feed: the CLI's number and string
options, `--set` overrides, and the readers' bytes and column names.

Property: a call either succeeds or ends in `ExaptError` (one `exapt: error:` line and
exit 2 through the CLI); never another exception, never a traceback. The CLI cases
name a data file that does not exist, so a value that passes its check ends at "data
file not found" instead of training: each example costs milliseconds. Bounded by
max_examples (no deadline) to stay well under a minute in all.
"""
from __future__ import annotations

import contextlib
import dataclasses
import io
import string
from pathlib import Path

import pytest

import os  # noqa: E402
import tempfile  # noqa: E402

# hypothesis keeps caches in ./.hypothesis unless told otherwise: not in the work tree
os.environ.setdefault("HYPOTHESIS_STORAGE_DIRECTORY", os.path.join(tempfile.gettempdir(), "exapt-hypothesis"))
hypothesis = pytest.importorskip("hypothesis")  # in the dev extra
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from exapt.cli import main  # noqa: E402
from exapt.config import FitConfig  # noqa: E402
from exapt.errors import ExaptError  # noqa: E402

# no example database: a test run leaves no .hypothesis folder behind
FUZZ = settings(max_examples=60, deadline=None, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture])
FUZZ_CLI = settings(FUZZ, max_examples=150)
MISSING = "/nonexistent/exapt-fuzz/data.csv"

# (command line before the option, the options that take a value)
COMMANDS = [
    (["fit", MISSING, "--text", "text"], ["--seed", "--val-fraction", "--test-fraction", "--max-test", "--epochs",
                                          "--lr", "--batch-size", "--max-length", "--patience", "--n-per-class",
                                          "--source-max-test", "--target-test-fraction", "--target-labels",
                                          "--strategy", "--model", "--text", "--label", "--features", "--penalty",
                                          "--task", "--pooling", "--select"]),
    (["compare", MISSING, "--out", "/nonexistent/exapt-fuzz/cmp"], ["--seeds", "--n-per-class", "--strategies",
                                                                    "--val-fraction", "--epochs", "--batch-size"]),
    (["rank", MISSING, "--models", "minilm-l6", "--out", "/nonexistent/exapt-fuzz/rk"],
     ["--seed", "--n-per-class", "--test-fraction", "--max-length", "--scores", "--layers", "--epochs"]),
    (["shift", MISSING, MISSING, "--out", "/nonexistent/exapt-fuzz/sh"],
     ["--seed", "--permutations", "--alpha", "--max-per-domain", "--target-labels", "--max-length"]),
    (["pretrain", MISSING, "--out", "/nonexistent/exapt-fuzz/pt", "--quiet"],
     ["--seed", "--max-length", "--batch-size", "--steps", "--lr", "--warmup", "--mask-probability", "--holdout",
      "--eval-every", "--max-tokens", "--vocab-size", "--kmer", "--arch", "--alphabet"]),
    (["transfer-map", "--domains", f"{MISSING},{MISSING}x", "--out", "/nonexistent/exapt-fuzz/tm"],
     ["--seeds", "--n-per-class", "--test-fraction", "--max-test", "--val-fraction", "--strategy"]),
]
OPTIONS = [(prefix, option) for prefix, options in COMMANDS for option in options]

numbers = st.one_of(st.integers(min_value=-(2**80), max_value=2**80), st.floats(allow_nan=True, allow_infinity=True))
values = st.one_of(numbers.map(repr), numbers.map(str), st.text(max_size=16),
                   st.sampled_from(["nan", "-inf", "1e400", "-1e-3", "0", "-0", "1_000", "0x10", " 1", "", "=",
                                    "lora:r=", "l2sp:", ":", ",", "all"]))


def run_cli(argv: list[str]) -> tuple[int, str]:
    err, out = io.StringIO(), io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
        try:
            code = main(argv)
        except SystemExit as e:  # only argparse's own --help / --version exit this way
            code = e.code if isinstance(e.code, int) else 1
    return code, err.getvalue()


def assert_one_line_or_success(argv, code: int, err: str) -> None:
    assert "Traceback" not in err, (argv, err)
    if code == 0:
        return
    lines = [x for x in err.splitlines() if x.strip() and not x.startswith("exapt: warning: ")]
    assert code == 2 and len(lines) == 1 and lines[0].startswith("exapt: error: "), (argv, code, err)


@FUZZ_CLI
@given(case=st.sampled_from(OPTIONS), value=values)
def test_cli_options_never_crash(case, value):
    prefix, option = case
    argv = [*prefix, f"{option}={value}"]
    code, err = run_cli(argv)
    assert_one_line_or_success(argv, code, err)
    assert code != 0  # the data file is missing: nothing can succeed


def _config_keys() -> list[str]:
    cfg = FitConfig()
    keys = [f.name for f in dataclasses.fields(cfg) if not dataclasses.is_dataclass(getattr(cfg, f.name))]
    for section in ("data", "train", "source", "adapt"):
        keys += [f"{section}.{f.name}" for f in dataclasses.fields(getattr(cfg, section))]
    return keys


@FUZZ_CLI
@given(key=st.one_of(st.sampled_from(_config_keys()), st.text(max_size=12)), value=values)
def test_set_overrides_never_crash(key, value):
    argv = ["fit", MISSING, "--text", "text", "--set", f"{key}={value}"]
    code, err = run_cli(argv)
    assert_one_line_or_success(argv, code, err)
    assert code != 0


def _read(path: Path, **columns):
    from exapt.data import load_data
    from exapt.data.readers import read_table

    try:
        read_table(path)
        load_data(path, **columns)
    except ExaptError as e:
        assert "\n" not in str(e).strip(), str(e)


cells = st.text(alphabet=string.printable + "é\u2028;\"'", max_size=12)


@FUZZ
@given(data=st.binary(max_size=300), suffix=st.sampled_from([".csv", ".tsv", ".jsonl", ".json", ".parquet"]))
def test_readers_take_any_bytes(tmp_path, data, suffix):
    path = tmp_path / f"fuzz{suffix}"
    path.write_bytes(data)
    _read(path)


@FUZZ
@given(header=st.lists(cells, min_size=1, max_size=4), rows=st.lists(st.lists(cells, max_size=5), max_size=6),
       delimiter=st.sampled_from([",", "\t", ";"]), suffix=st.sampled_from([".csv", ".tsv"]),
       text=st.one_of(st.none(), cells), label=st.one_of(st.none(), cells))
def test_readers_take_any_table_and_column_names(tmp_path, header, rows, delimiter, suffix, text, label):
    path = tmp_path / f"table{suffix}"
    path.write_text("\n".join(delimiter.join(r) for r in [header, *rows]) + "\n", encoding="utf-8")
    _read(path, text=text, label=label)


@FUZZ
@given(records=st.lists(st.dictionaries(cells, st.one_of(st.none(), st.integers(), st.floats(), cells,
                                                          st.lists(st.integers(), max_size=3)), max_size=4),
                        max_size=5),
       text=st.one_of(st.none(), cells), label=st.one_of(st.none(), cells))
def test_jsonl_records_and_column_names(tmp_path, records, text, label):
    import json

    path = tmp_path / "records.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    _read(path, text=text, label=label)
