"""A fit that stops part-way (diverged, disk full, killed inside a checkpoint write, a
damaged checkpoint) says so in one line and leaves a folder that `exapt fit --resume`
continues to the uninterrupted result, with no temporary file left behind.

The smallest real setup: the built-in `digits` with the `mlp` model, full fine-tuning,
10 examples per class, 4 epochs (about a second a fit in-process).
"""
from __future__ import annotations

import errno
import importlib.util
import json
import os
import sys
import warnings
from pathlib import Path

import pytest

import exapt.files as checkpoint  # the atomic writers (save_file is patched there)
from exapt.cli import main

FIT = ["fit", "digits", "--model", "mlp", "--strategy", "full", "--epochs", "4", "--n-per-class", "10", "--quiet"]
BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "kill_trials.py"


def _cli(capsys, argv) -> tuple[int, str]:
    code = main([str(a) for a in argv])
    cap = capsys.readouterr()
    assert "Traceback" not in cap.out + cap.err
    return code, cap.err


def _one_error(err: str) -> str:
    lines = [x for x in err.splitlines() if x.strip()]
    assert len(lines) == 1 and lines[0].startswith("exapt: error: "), err
    return lines[0]


def _weights(run: Path) -> dict:
    from safetensors.torch import load_file

    return {k: v.numpy().tobytes() for k, v in load_file(str(run / "weights.safetensors")).items()}


def _history(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "history.jsonl").read_text().splitlines()]


def _timeless(run: Path) -> list[dict]:
    return [{k: v for k, v in r.items() if k != "seconds"} for r in _history(run)]


def _temporaries(run: Path) -> list[str]:
    return sorted(p.name for p in run.rglob("*.tmp"))


def _fail_at_checkpoint(monkeypatch, number: int, error: BaseException) -> None:
    """The checkpoint writer writes half of write `number` to its temporary, then raises."""
    real, calls = checkpoint.save_file, [0]

    def save_file(tensors, filename, metadata=None):
        if not Path(filename).name.startswith("checkpoint.safetensors"):
            return real(tensors, filename, metadata=metadata)
        calls[0] += 1
        real(tensors, filename, metadata=metadata)
        if calls[0] == number:
            os.truncate(filename, os.path.getsize(filename) // 2)
            raise error

    monkeypatch.setattr(checkpoint, "save_file", save_file)


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    """The uninterrupted run."""
    out = tmp_path_factory.mktemp("reference") / "run"
    assert main([*FIT, "--out", str(out)]) == 0
    return out


def test_full_disk_during_a_checkpoint_write_is_one_line_and_resumes_exactly(capsys, monkeypatch, tmp_path,
                                                                             reference):
    out = tmp_path / "run"
    _fail_at_checkpoint(monkeypatch, 3, OSError(errno.ENOSPC, "No space left on device"))
    code, err = _cli(capsys, [*FIT, "--out", out])
    line = _one_error(err)
    assert code == 2 and "no space left" in line and f"--resume {out}" in line, line
    assert _temporaries(out) == [] and not (out / "metrics.json").exists()
    assert (out / "checkpoint.safetensors").exists()  # epoch 2's, whole
    monkeypatch.undo()  # space freed
    code, err = _cli(capsys, ["fit", "--resume", out, "--quiet"])
    assert code == 0, err
    assert _weights(out) == _weights(reference) and _timeless(out) == _timeless(reference)
    assert _temporaries(out) == [] and not (out / "checkpoint.safetensors").exists()


def test_damaged_checkpoint_is_one_line_then_deleting_it_restarts(capsys, monkeypatch, tmp_path, reference):
    out = tmp_path / "run"
    _fail_at_checkpoint(monkeypatch, 2, KeyboardInterrupt())
    code, _ = _cli(capsys, [*FIT, "--out", out])
    assert code == 130
    monkeypatch.undo()
    ckpt = out / "checkpoint.safetensors"
    ckpt.write_bytes(b"\xff" * 64)  # a header length no file has
    code, err = _cli(capsys, ["fit", "--resume", out, "--quiet"])
    line = _one_error(err)
    assert code == 2 and "checkpoint is damaged" in line and "delete it" in line, line
    ckpt.unlink()
    code, err = _cli(capsys, ["fit", "--resume", out, "--quiet"])
    assert code == 0, err
    assert _weights(out) == _weights(reference) and _timeless(out) == _timeless(reference)


def test_stale_temporaries_go_and_time_is_summed_across_resumes(capsys, monkeypatch, tmp_path, reference):
    out = tmp_path / "run"
    _fail_at_checkpoint(monkeypatch, 3, KeyboardInterrupt())
    assert _cli(capsys, [*FIT, "--out", out])[0] == 130
    monkeypatch.undo()
    # what a kill inside a write leaves, here and in the adapter folder
    (out / "checkpoint.safetensorsx1y2z3_q.tmp").write_bytes(b"half")
    before = json.loads(json.dumps(checkpoint.load_tensors(out / "checkpoint.safetensors")[1]))
    assert before["epoch"] == 2 and before["seconds"] > 0
    code, err = _cli(capsys, ["fit", "--resume", out, "--quiet"])
    assert code == 0, err
    assert _temporaries(out) == []
    seconds = [r["seconds"] for r in _history(out)]
    assert seconds[:2] == [r["seconds"] for r in before["history"]]  # the first process's epochs, kept
    assert seconds == sorted(seconds) and seconds[2] > before["seconds"]  # the clock runs on, not from 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["train_seconds"] >= round(before["seconds"], 2)
    assert _weights(out) == _weights(reference)


def test_divergence_stops_at_its_step_and_resume_with_a_new_lr_finishes(capsys, tmp_path):
    out = tmp_path / "run"
    code, err = _cli(capsys, [*FIT, "--out", out, "--lr", "1e9", "--set", "train.head_lr=1e9"])
    line = _one_error(err)
    assert code == 2 and "epoch 1, step" in line and "learning rate is likely too high" in line, line
    assert "--set train.lr=" in line and f"--resume {out}" in line
    assert not (out / "metrics.json").exists() and _temporaries(out) == []
    code, err = _cli(capsys, ["fit", "--resume", out, "--quiet"])  # the same settings: the same line
    assert code == 2 and "learning rate is likely too high" in _one_error(err)
    code, err = _cli(capsys, ["fit", "--resume", out, "--quiet", "--set", "train.lr=1e-3", "--set",
                              "train.head_lr=3e-3"])
    assert code == 0, err
    assert (out / "metrics.json").exists()
    code, err = _cli(capsys, ["fit", "--resume", out, "--set", "train.epochs=9"])  # not an optimiser setting
    assert code == 2 and "a resumed run can change only" in _one_error(err)


def test_resume_with_a_new_lr_continues_the_schedule_at_the_new_rate(capsys, monkeypatch, tmp_path, reference):
    out = tmp_path / "run"
    _fail_at_checkpoint(monkeypatch, 3, KeyboardInterrupt())
    assert _cli(capsys, [*FIT, "--out", out])[0] == 130
    monkeypatch.undo()
    from exapt.strategies import parse_strategy

    lr = 2 * parse_strategy("full").default_lr
    code, err = _cli(capsys, ["fit", "--resume", out, "--quiet", "--set", f"train.lr={lr!r}"])
    assert code == 0, err
    old, new = _history(reference), _history(out)
    assert new[:2] == [{**r, "seconds": n["seconds"]} for r, n in zip(old[:2], new[:2])]
    for a, b in zip(old[2:], new[2:]):  # the schedule's factor, at twice the base rate
        assert b["lr"] == pytest.approx(2 * a["lr"], rel=1e-9) if a["lr"] else b["lr"] == 0


def test_library_warnings_print_as_one_line(capsys, monkeypatch):
    import exapt.cli as cli

    def noisy(_args):
        warnings.warn("something odd\nwith a second line", UserWarning)

    monkeypatch.setitem(cli.COMMANDS, "models", noisy)
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        assert main(["models"]) == 0
    err = capsys.readouterr().err
    assert err == "exapt: warning: something odd\n"


@pytest.fixture(scope="module")
def kill_bench(tmp_path_factory):
    """benchmarks/kill_trials.py, and its uninterrupted run (subprocesses, as the trials)."""
    spec = importlib.util.spec_from_file_location("kill_trials", BENCH)
    kill = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(kill)
    work = tmp_path_factory.mktemp("kill")
    return kill, work, kill.uninterrupted(work)


@pytest.mark.skipif(sys.platform != "linux", reason="SIGKILL and a POSIX file system")
@pytest.mark.parametrize("strike", [1, 3])
def test_kill_9_inside_a_checkpoint_write_resumes_to_the_uninterrupted_result(kill_bench, strike):
    kill, work, reference = kill_bench
    result = kill.trial(work, reference, strike, f"killed-{strike}")
    assert result["temporary_left_by_kill"].endswith(".tmp")  # it died inside the write
    assert result["resume_exit"] == 0, result["stderr"]
    assert result["identical"] and result["strays"] == []
