"""Every user mistake, through the CLI: exit 2, exactly one `exapt: error:` line on stderr
naming what is at fault, no traceback, and no run folder that looks complete."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from exapt.cli import main


def expect_error(capsys, argv, *parts, out: Path | None = None) -> str:
    code = main([str(a) for a in argv])
    cap = capsys.readouterr()
    assert "Traceback" not in cap.out + cap.err
    assert code == 2, f"exit {code}; stderr: {cap.err!r}"
    lines = cap.err.splitlines()
    assert len(lines) == 1, f"expected one stderr line, got: {cap.err!r}"
    line = lines[0]
    assert line.startswith("exapt: error: "), line
    for p in parts:
        assert str(p) in line, f"{p!r} not in {line!r}"
    if out is not None:
        assert not out.exists() or not (Path(out) / "metrics.json").exists(), f"{out} looks like a complete run"
        assert not out.exists(), f"a failed fit left {out} behind: {sorted(p.name for p in out.iterdir())}"
    return line


def write(path: Path, content: str | bytes) -> Path:
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    return path


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


GOOD_ROWS = "text,label\ngreat flight,positive\nlost my bag,negative\nit was a flight,neutral\nlove it,positive\n"


@pytest.fixture
def fit_args(tiny_bert, tmp_path):
    """`exapt fit DATA ...` with the tiny model and a fresh --out."""
    out = tmp_path / "run"

    def args(data, *extra):
        return ["fit", data, "--model", tiny_bert, "--epochs", "1", "--out", out, *extra]

    args.out = out
    return args


# ------------------------------------------------------------------- data files
def test_missing_file(capsys, fit_args, tmp_path):
    expect_error(capsys, fit_args(tmp_path / "nope.csv"), "data file not found", "nope.csv", out=fit_args.out)


def test_garbage_parquet(capsys, fit_args, tmp_path):
    f = write(tmp_path / "bad.parquet", b"this is not parquet at all\x00\x01\x02" * 10)
    expect_error(capsys, fit_args(f), "bad.parquet", "not a readable Parquet file", out=fit_args.out)


def test_unsupported_extension(capsys, fit_args, tmp_path):
    f = write(tmp_path / "data.xlsx", GOOD_ROWS)
    expect_error(capsys, fit_args(f), "data.xlsx", "unsupported file type", out=fit_args.out)


def test_wrong_text_column(capsys, fit_args, tmp_path):
    f = write(tmp_path / "d.csv", GOOD_ROWS)
    expect_error(capsys, fit_args(f, "--text", "body"), "d.csv", "'body'", "available: text, label",
                 out=fit_args.out)


def test_missing_default_text_column(capsys, fit_args, tmp_path):
    f = write(tmp_path / "d.csv", GOOD_ROWS.replace("text,label", "tweet,label"))
    expect_error(capsys, fit_args(f), "d.csv", "no 'text' column", "tweet", out=fit_args.out)


def test_missing_label_column(capsys, fit_args, tmp_path):
    f = write(tmp_path / "d.csv", GOOD_ROWS)
    expect_error(capsys, fit_args(f, "--label", "stars"), "d.csv", "label column 'stars'", out=fit_args.out)


@pytest.mark.parametrize("content, why", [("", "empty"), ("   \n\n", "empty"), ("text,label\n", "no data rows")])
def test_empty_file(capsys, fit_args, tmp_path, content, why):
    f = write(tmp_path / "empty.csv", content)
    expect_error(capsys, fit_args(f), "empty.csv", why, out=fit_args.out)


def test_single_class(capsys, fit_args, tmp_path):
    f = write(tmp_path / "one.csv", "text,label\n" + "".join(f"tweet {i},positive\n" for i in range(12)))
    expect_error(capsys, fit_args(f), "one.csv", "single class", "positive", out=fit_args.out)


@pytest.mark.parametrize("name, content, row", [
    ("d.csv", 'text,label\ngood,positive\n"",negative\nok,neutral\n', "row 2"),
    ("d.csv", "text,label\ngood,positive\nok,neutral\n   ,negative\n", "row 3"),
    ("d.jsonl", '{"text": "good", "label": "positive"}\n{"text": null, "label": "negative"}\n', "row 2"),
    ("d.json", '[{"text": "good", "label": "a"}, {"text": NaN, "label": "b"}]', "row 2"),
])
def test_nan_or_empty_text_names_the_row(capsys, fit_args, tmp_path, name, content, row):
    f = write(tmp_path / name, content)
    expect_error(capsys, fit_args(f), name, row, "column 'text'", "text is empty", out=fit_args.out)


def test_missing_label_names_the_row(capsys, fit_args, tmp_path):
    f = write(tmp_path / "d.csv", "text,label\ngood,positive\nbad,\nok,neutral\n")
    expect_error(capsys, fit_args(f), "d.csv", "row 2", "column 'label'", out=fit_args.out)


def test_non_utf8_bytes(capsys, fit_args, tmp_path):
    f = write(tmp_path / "latin1.csv", "text,label\ngood,positive\ncaf\u00e9 ok,neutral\n".encode("latin-1"))
    expect_error(capsys, fit_args(f), "latin1.csv", "line 3", "not valid UTF-8", "0xe9", out=fit_args.out)


def test_ragged_csv_names_the_line(capsys, fit_args, tmp_path):
    f = write(tmp_path / "d.csv", GOOD_ROWS + "oops, a comma,positive\n")
    expect_error(capsys, fit_args(f), "d.csv", "line 6", "3 fields", out=fit_args.out)


# ------------------------------------------------------------------- models
def test_model_path_that_does_not_exist(capsys, tweets_small, tmp_path):
    out = tmp_path / "run"
    expect_error(capsys, ["fit", tweets_small, "--model", tmp_path / "no-model", "--out", out],
                 "--model", "no-model", "no such alias or folder", out=out)


def test_model_dir_that_is_empty(capsys, tweets_small, tmp_path):
    (tmp_path / "empty-model").mkdir()
    out = tmp_path / "run"
    expect_error(capsys, ["fit", tweets_small, "--model", tmp_path / "empty-model", "--out", out],
                 "empty-model", "no config.json", out=out)


@pytest.mark.parametrize("config", ["{not json", '{"model_type": "no-such-architecture"}', "{}"])
def test_model_dir_with_broken_config(capsys, tweets_small, tiny_bert, tmp_path, config):
    model = tmp_path / "broken-model"
    shutil.copytree(tiny_bert, model)
    (model / "config.json").write_text(config)
    out = tmp_path / "run"
    expect_error(capsys, ["fit", tweets_small, "--model", model, "--out", out],
                 "broken-model", "cannot load", out=out)


def test_model_dir_without_weights(capsys, tweets_small, tiny_bert, tmp_path):
    model = tmp_path / "no-weights"
    shutil.copytree(tiny_bert, model)
    (model / "model.safetensors").unlink()
    out = tmp_path / "run"
    expect_error(capsys, ["fit", tweets_small, "--model", model, "--out", out], "no-weights", "has no weights", out=out)


def test_mlp_model_with_text_data(capsys, fit_args, tweets_small):
    line = expect_error(capsys, [*fit_args(tweets_small), "--model", "mlp"], "mlp", "--features", out=fit_args.out)
    assert "text" in line


def test_text_model_with_feature_columns(capsys, fit_args, tmp_path):
    f = write(tmp_path / "nums.csv", "a,b,label\n" + "".join(f"{i},{i * 2},{i % 2}\n" for i in range(20)))
    expect_error(capsys, fit_args(f, "--features", "a,b"), "--model", "takes text inputs but the data has features", "numeric --features need --model mlp",
                 out=fit_args.out)


# ------------------------------------------------------------------- options
def test_unknown_strategy(capsys, fit_args, tweets_small):
    line = expect_error(capsys, fit_args(tweets_small, "--strategy", "bogus"), "strategy", "'bogus'",
                        out=fit_args.out)
    for name in ("full", "freeze", "linear-probe", "lp-ft"):  # the choices are listed
        assert name in line


@pytest.mark.parametrize("spec", ["freeze", "freeze:3", "freeze:9"])
def test_freeze_that_leaves_only_the_head(capsys, fit_args, tweets_small, spec):
    # the tiny model has 3 blocks (embeddings, layer.0, layer.1)
    expect_error(capsys, fit_args(tweets_small, "--strategy", spec), f"--strategy {spec}", "3 blocks",
                 "use linear-probe", out=fit_args.out)
    assert not fit_args.out.exists()


@pytest.mark.parametrize("spec, parts", [
    ("freeze:-1", ["--strategy 'freeze:-1'", "k must be >= 0"]),
    ("freeze:abc", ["--strategy 'freeze:abc'", "k must be", "'abc'"]),
    ("freeze:1.5", ["--strategy 'freeze:1.5'", "'1.5'"]),
    ("layerwise-lr:1.5", ["--strategy 'layerwise-lr:1.5'", "decay must be in (0, 1]"]),
    ("linear-probe:0", ["--strategy 'linear-probe:0'", "C must be > 0"]),
    ("full:3", ["--strategy 'full:3'", "full takes 0 option(s): none"]),
    ("freeze:k=2,j=1", ["--strategy 'freeze:k=2,j=1'", "freeze has no option 'j' (options: k)"]),
    ("freeze:x=2", ["--strategy 'freeze:x=2'", "no option 'x'"]),
    ("gradual-unfreeze:0", ["blocks_per_epoch must be >= 1"]),
])
def test_bad_strategy_option(capsys, fit_args, tweets_small, spec, parts):
    expect_error(capsys, fit_args(tweets_small, "--strategy", spec), *parts, out=fit_args.out)


@pytest.mark.parametrize("assignment, parts", [
    ("train.bogus=1", ["--set 'train.bogus=1'", "unknown option 'bogus'", "head_lr"]),
    ("bogus.lr=1", ["--set 'bogus.lr=1'", "unknown section 'bogus'"]),
    ("nokey", ["--set 'nokey'", "key=value"]),
    ("train.batch_size=big", ["--set 'train.batch_size=big'", "batch_size must be int"]),
    ("train.cache_prefix=maybe", ["cache_prefix must be bool"]),
    ("max_length=4", ["--max-length must be >= 8"]),
])
def test_bad_set(capsys, fit_args, tweets_small, assignment, parts):
    expect_error(capsys, fit_args(tweets_small, "--set", assignment), *parts, out=fit_args.out)


@pytest.mark.parametrize("assignment", ["train.head_lr=abc", "train.lr=abc", "data.n_per_class=abc"])
def test_set_on_optional_field_is_type_checked(capsys, tweets_small, tiny_bert, tmp_path, assignment):
    out = tmp_path / "run"
    expect_error(capsys, ["fit", tweets_small, "--model", tiny_bert, "--strategy", "full", "--out", out,
                          "--set", assignment], f"--set {assignment!r}", out=out)


@pytest.mark.parametrize("option, value, parts", [
    ("--n-per-class", "0", ["--n-per-class must be >= 1 (got 0)"]),
    ("--n-per-class", "-3", ["--n-per-class must be >= 1"]),
    ("--epochs", "0", ["--epochs must be >= 1"]),
    ("--epochs", "abc", ["--epochs", "invalid int value: 'abc'"]),
    ("--batch-size", "0", ["--batch-size must be >= 1"]),
    ("--lr", "-1", ["--lr must be > 0"]),
    ("--val-fraction", "1", ["--val-fraction must be in [0, 1)"]),
    ("--max-length", "2", ["--max-length must be >= 8"]),
    ("--pooling", "max", ["--pooling", "invalid choice: 'max'"]),
    ("--task", "ranking", ["--task", "invalid choice: 'ranking'"]),
])
def test_bad_numeric_and_choice_options(capsys, fit_args, tweets_small, option, value, parts):
    expect_error(capsys, fit_args(tweets_small, option, value), *parts, out=fit_args.out)


def test_n_per_class_on_regression(capsys, fit_args, tmp_path):
    f = write(tmp_path / "reg.csv", "text,label\n" + "".join(f"text number {i},{i * 1.37:.2f}\n" for i in range(40)))
    expect_error(capsys, fit_args(f, "--n-per-class", "4"), "--n-per-class", "classification", out=fit_args.out)


def test_fit_without_data(capsys):
    expect_error(capsys, ["fit"], "fit needs DATA")


def test_unknown_command(capsys):
    expect_error(capsys, ["frobnicate"], "invalid choice: 'frobnicate'")


# ------------------------------------------------------------------- existing outputs
def test_out_is_an_existing_complete_run(capsys, fit_args, probe_run, tweets_small, tmp_path):
    existing = tmp_path / "existing"
    shutil.copytree(probe_run, existing)
    before = snapshot(existing)
    argv = [a if a != fit_args.out else existing for a in fit_args(tweets_small, "--strategy", "full")]
    expect_error(capsys, argv, str(existing), "already holds a complete run", "--overwrite")
    assert snapshot(existing) == before


def test_out_is_an_unrelated_non_empty_folder(capsys, fit_args, tweets_small, tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    write(folder / "cat.jpg", b"\xff\xd8 meow")
    argv = [a if a != fit_args.out else folder for a in fit_args(tweets_small)]
    expect_error(capsys, argv, "photos", "not a run")
    assert snapshot(folder) == {"cat.jpg": b"\xff\xd8 meow"}


def test_out_is_an_interrupted_run(capsys, fit_args, probe_run, tweets_small, tmp_path):
    part = tmp_path / "part"
    shutil.copytree(probe_run, part)
    (part / "metrics.json").unlink()
    before = snapshot(part)
    argv = [a if a != fit_args.out else part for a in fit_args(tweets_small)]
    expect_error(capsys, argv, "interrupted run", f"--resume {part}")
    assert snapshot(part) == before


def test_resume_errors(capsys, tweets_small, tmp_path):
    expect_error(capsys, ["fit", "--resume", tmp_path], "--resume", "no config.yaml")
    expect_error(capsys, ["fit", tweets_small, "--resume", tmp_path], "drop the DATA argument")


def test_predict_onto_existing_file(capsys, probe_run, tweets_test_small, tmp_path):
    target = write(tmp_path / "preds.csv", "precious,data\n1,2\n")
    expect_error(capsys, ["predict", probe_run, tweets_test_small, "-o", target], "preds.csv", "exists", "--overwrite")
    assert target.read_text() == "precious,data\n1,2\n"


def test_predict_into_missing_folder(capsys, probe_run, tweets_test_small, tmp_path):
    expect_error(capsys, ["predict", probe_run, tweets_test_small, "-o", tmp_path / "no" / "p.csv"],
                 "does not exist")


def test_predict_without_output_option(capsys, probe_run, tweets_test_small):
    expect_error(capsys, ["predict", probe_run, tweets_test_small], "-o/--output")


# ------------------------------------------------------------------- evaluate / load
def test_evaluate_unknown_label(capsys, probe_run, tmp_path):
    f = write(tmp_path / "new_labels.csv", "text,label\ngreat,positive\nmeh,neutral\nfurious!!,angry\n")
    expect_error(capsys, ["evaluate", probe_run, f], "new_labels.csv", "row 3", "'angry'", "never seen in training",
                 "negative, neutral, positive")


def test_evaluate_without_label_column(capsys, probe_run, tmp_path):
    f = write(tmp_path / "unlabelled.csv", "text\ngreat\nmeh\n")
    expect_error(capsys, ["evaluate", probe_run, f], "unlabelled.csv", "label column 'label'")


def test_evaluate_on_a_folder_that_is_not_a_run(capsys, tweets_test_small, tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    expect_error(capsys, ["evaluate", tmp_path, tweets_test_small], str(tmp_path), "not a complete run")
    expect_error(capsys, ["evaluate", tmp_path / "missing", tweets_test_small], "run folder not found", "missing")


def test_evaluate_run_with_damaged_config(capsys, probe_run, tweets_test_small, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(probe_run, run)
    (run / "config.yaml").write_text("data: [unclosed\n")
    expect_error(capsys, ["evaluate", run, tweets_test_small], "config.yaml", "not a readable exapt config")


def test_evaluate_run_whose_base_model_changed(capsys, probe_run, tweets_test_small, tmp_path):
    """A run is never applied to different base weights: the recorded sha256 is checked."""
    import yaml

    run, model = tmp_path / "run", tmp_path / "model"
    shutil.copytree(probe_run, run)
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    shutil.copytree(cfg["model"], model)
    with open(model / "model.safetensors", "r+b") as fh:  # flip bytes inside the weights, keep the header
        fh.seek(-64, 2)
        fh.write(bytes(64))
    cfg["model"] = str(model)
    (run / "config.yaml").write_text(yaml.safe_dump(cfg))
    expect_error(capsys, ["evaluate", run, tweets_test_small], "base model's weights differ", "sha256")


# ------------------------------------------------------------ once-known bugs (now fixed)
@pytest.mark.parametrize("strategy", ["linear-probe", "full"])
def test_test_fraction_zero_without_test_file(capsys, fit_args, tweets_small, strategy):
    expect_error(capsys, fit_args(tweets_small, "--strategy", strategy, "--test-fraction", "0"), "--test-fraction",
                 out=fit_args.out)


def test_negative_patience(capsys, fit_args, tweets_small):
    expect_error(capsys, fit_args(tweets_small, "--strategy", "full", "--patience", "-1"), "--patience",
                 out=fit_args.out)


def test_zero_max_test(capsys, fit_args, tweets_small):
    expect_error(capsys, fit_args(tweets_small, "--max-test", "0"), "--max-test", out=fit_args.out)


@pytest.mark.parametrize("damage", ["no labels.json", "truncated weights", "labels.json with other classes"])
def test_evaluate_damaged_run(capsys, probe_run, tweets_test_small, tmp_path, damage):
    run = tmp_path / "run"
    shutil.copytree(probe_run, run)
    if damage == "no labels.json":
        (run / "labels.json").unlink()
        part = "labels.json"
    elif damage == "truncated weights":
        data = (run / "weights.safetensors").read_bytes()
        (run / "weights.safetensors").write_bytes(data[:100])
        part = "weights.safetensors"
    else:
        (run / "labels.json").write_text(json.dumps({"task": "classification", "classes": ["a", "b"]}))
        part = str(run)
    expect_error(capsys, ["evaluate", run, tweets_test_small], part)


@pytest.mark.parametrize("raw, expected", [("1e-4", 1e-4), ("2E-5", 2e-5), ("3", 3.0), ("0.5", 0.5), ("null", None)])
def test_set_reads_a_learning_rate_written_the_usual_way(raw, expected):
    """YAML 1.1 reads `1e-4` (no dot) as a string; --set must still take it as a float."""
    from exapt.config import FitConfig, apply_override

    cfg = FitConfig()
    apply_override(cfg, f"train.lr={raw}")
    assert cfg.train.lr == expected and (expected is None or isinstance(cfg.train.lr, float))
