"""RunFolder / SweepFolder: the one owner of a run's layout, atomic writes, completion,
and the output-path checks every command shares."""
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from exapt.config import FitConfig
from exapt.errors import ExaptError
from exapt.run_folder import RunFolder, check_can_be_folder, publish_run
from exapt.sweep_folder import SweepFolder

SRC = Path(__file__).resolve().parents[1] / "src" / "exapt"


def test_a_folder_is_complete_only_once_metrics_are_written(tmp_path):
    run = RunFolder(tmp_path / "r")
    run.create()
    run.write_config(FitConfig())
    assert run.is_run() and not run.is_complete()
    run.write_weights({"head.weight": torch.ones(2, 3)}, {"model": "x", "sha256": "abc"})
    assert not run.is_complete()
    run.checkpoint.write_bytes(b"optimiser state")
    (run.path / "weights.safetensorsk3j_9xq2.tmp").write_bytes(b"half a file")  # a write a kill cut short
    run.mark_complete({"test": {"accuracy": 0.5}})
    assert run.is_complete()
    assert run.read_metrics() == {"test": {"accuracy": 0.5}}
    assert not run.checkpoint.exists() and not list(run.path.glob("*.tmp"))
    tensors, meta = run.read_weights()
    assert meta["base_model"]["sha256"] == "abc" and torch.equal(tensors["head.weight"], torch.ones(2, 3))
    assert run.read_config() == FitConfig()


def test_check_new_refuses_what_it_must(tmp_path):
    done = RunFolder(tmp_path / "done")
    done.create()
    done.write_config(FitConfig())
    done.write_weights({}, {})
    done.mark_complete({})
    with pytest.raises(ExaptError, match="already holds a complete run"):
        done.check_new(overwrite=False)
    done.check_new(overwrite=True)

    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "thesis.tex").write_text("precious")
    with pytest.raises(ExaptError, match="non-empty folder that is not a run"):
        RunFolder(mine).check_new(overwrite=True)

    half = RunFolder(tmp_path / "half")
    half.create()
    half.write_config(FitConfig())
    with pytest.raises(ExaptError, match="holds an interrupted run; continue it with --resume"):
        half.check_fresh_fit(overwrite=False)


@pytest.mark.parametrize("where", ["file", "under-file"])
def test_an_output_that_can_never_be_a_folder_is_one_line(tmp_path, where):
    a_file = tmp_path / "notes.txt"
    a_file.write_text("keep me")
    out = a_file if where == "file" else a_file / "run"
    with pytest.raises(ExaptError, match="is a file"):
        check_can_be_folder(out)
    assert a_file.read_text() == "keep me"


def test_fit_into_a_file_or_proc_exits_with_one_line_and_writes_nothing(tmp_path, tweets_small, tiny_bert):
    a_file = tmp_path / "notes.txt"
    a_file.write_text("keep me")
    for out in (a_file, a_file / "sub", Path("/proc/exapt-cannot-be-here")):
        r = subprocess.run([sys.executable, "-m", "exapt.cli", "fit", str(tweets_small), "--text", "text",
                            "--model", str(tiny_bert), "--out", str(out)],
                           capture_output=True, text=True, cwd=tmp_path)
        assert r.returncode == 2, r.stderr
        assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert a_file.read_text() == "keep me"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


def test_publish_run_leaves_nothing_when_the_writer_fails(tmp_path):
    def broken(folder):
        folder.write_config(FitConfig())
        raise OSError("disk full")

    with pytest.raises(OSError):
        publish_run(tmp_path / "merged", False, broken)
    assert list(tmp_path.iterdir()) == []

    def whole(folder):
        folder.write_config(FitConfig())
        folder.write_weights({}, {})
        folder.mark_complete({"ok": 1})

    out = publish_run(tmp_path / "merged", False, whole)
    assert out.is_complete() and [p.name for p in tmp_path.iterdir()] == ["merged"]


def test_a_sweep_reads_back_only_records_of_the_same_config(tmp_path):
    sweep = SweepFolder(tmp_path / "cmp", "compare.yaml", "cell.json", "compare")
    sweep.prepare({"a": 1}, overwrite=False)
    sweep.write_marker({"settings": {"a": 1}})
    cfg = FitConfig()
    folder, resume = sweep.start_fit("cell", cfg)
    assert not resume
    folder.create()
    folder.write_config(cfg)
    sweep.write_record("cell", {"accuracy": 0.7})
    assert sweep.read_record("cell", cfg) == {"accuracy": 0.7}
    other = FitConfig(strategy="full")
    assert sweep.read_record("cell", other) is None
    _, resume = sweep.start_fit("cell", other)    # made under another configuration: removed
    assert not resume and not folder.path.exists()
    with pytest.raises(ExaptError, match=r"made with other settings \(a: 1 -> 2\)"):
        sweep.prepare({"a": 2}, overwrite=False)


def test_no_module_but_run_folder_names_a_run_file():
    """The layout has one owner: no other module writes a run file's name as a literal."""
    names = [f'"{n}"' for n in (RunFolder.CONFIG, RunFolder.LABELS, RunFolder.WEIGHTS, RunFolder.START,
                                 RunFolder.CHECKPOINT, RunFolder.FISHER, RunFolder.HISTORY, RunFolder.METRICS)]
    offenders = []
    for path in SRC.rglob("*.py"):
        # deploy/predictor.py owns the layout of an export folder, which also has a labels.json
        if path.name == "run_folder.py" or path.relative_to(SRC).as_posix() == "deploy/predictor.py":
            continue
        text = path.read_text()
        offenders += [f"{path.relative_to(SRC)}: {n}" for n in names if n in text]
    assert offenders == []


def test_the_temporary_file_of_a_failed_write_is_removed(tmp_path, monkeypatch):
    from exapt import files

    def full_disk(*a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(files, "save_file", full_disk)
    with pytest.raises(ExaptError, match="no space left on the device"):
        files.atomic_save_tensors({"x": torch.zeros(2)}, tmp_path / "w.safetensors")
    assert os.listdir(tmp_path) == []


def test_a_full_disk_at_the_first_write_leaves_no_folder(tmp_path, monkeypatch):
    import exapt.run_folder as run_folder
    from exapt.files import WriteError

    def full_disk(path, text):
        raise WriteError(f"cannot write {path}: no space left on the device")

    monkeypatch.setattr(run_folder, "atomic_write_text", full_disk)
    run = RunFolder(tmp_path / "new")
    with pytest.raises(ExaptError, match="no space left on the device"):
        run.begin(FitConfig(), {"task": "classification"})
    assert not run.path.exists()
