"""kill -9 during a checkpoint write, then `exapt fit --resume`: the same result as never killed.

Each trial starts a fit in a child process whose checkpoint writer is slowed: at the
N-th checkpoint it writes half the file to its temporary, says so (a marker file) and
waits; the parent then sends SIGKILL, so the process dies *inside* the write with the
temporary on disk. `exapt fit --resume` must then reach the uninterrupted run's weights,
metrics and history (times aside) and leave no temporary behind.

    python benchmarks/kill_trials.py --trials 20            # ~20 x 15 s on 2 cores

The smallest real setup: the built-in `digits` (64 numeric features) with the `mlp`
model, full fine-tuning, 10 examples per class, 6 epochs. tests/test_bad_input_corpus.py
runs two of these trials.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

EPOCHS = 6
FIT = ["fit", "digits", "--model", "mlp", "--strategy", "full", "--epochs", str(EPOCHS), "--n-per-class", "10",
       "--quiet"]

# The child: exapt's CLI with a checkpoint writer that stops half-way through write number
# EXAPT_STRIKE (1-based, checkpoints only) and waits there to be killed.
CHILD = r"""
import os, sys, time
from pathlib import Path
import exapt.files as ckpt  # the atomic writers: save_file is slowed there

strike, marker = int(os.environ["EXAPT_STRIKE"]), Path(os.environ["EXAPT_MARKER"])
real, calls = ckpt.save_file, [0]

def slow_save_file(tensors, filename, metadata=None):
    if not Path(filename).name.startswith("checkpoint.safetensors"):
        return real(tensors, filename, metadata=metadata)
    calls[0] += 1
    real(tensors, filename, metadata=metadata)
    if calls[0] == strike:
        size = os.path.getsize(filename)
        os.truncate(filename, size // 2)   # half of it on disk, as a write cut short
        marker.write_text(filename)
        time.sleep(600)

ckpt.save_file = slow_save_file
from exapt.cli import main
sys.exit(main(sys.argv[1:]))
"""


def _env() -> dict:
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    env.setdefault("OMP_NUM_THREADS", "1")
    return env


def run_cli(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "exapt.cli", *args], cwd=cwd, env=_env(), capture_output=True,
                          text=True, timeout=600)


def uninterrupted(work: Path) -> Path:
    out = work / "uninterrupted"
    result = run_cli([*FIT, "--out", str(out)], work)
    if result.returncode != 0:
        raise RuntimeError(f"uninterrupted fit failed: {result.stderr}")
    return out


def kill_during_write(work: Path, out: Path, strike: int) -> Path:
    """Start the fit, SIGKILL it inside checkpoint write `strike`; returns the temporary left."""
    marker = work / f"{out.name}.marker"
    env = dict(_env(), EXAPT_STRIKE=str(strike), EXAPT_MARKER=str(marker))
    child = subprocess.Popen([sys.executable, "-c", CHILD, *FIT, "--out", str(out)], cwd=work, env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 300
    while not marker.exists():
        if child.poll() is not None:
            raise RuntimeError(f"child ended before the strike: {child.stderr.read().decode()}")
        if time.monotonic() > deadline:
            child.kill()
            raise RuntimeError("child never reached the strike")
        time.sleep(0.05)
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    child.stderr.close()
    tmp = Path(marker.read_text())
    if not tmp.exists():
        raise RuntimeError(f"the kill left no temporary at {tmp}: it did not strike during the write")
    return tmp


def _tensors(path: Path) -> dict:
    from safetensors.torch import load_file

    return {k: v.numpy().tobytes() for k, v in load_file(str(path)).items()}


def _timeless(run: Path) -> tuple:
    metrics = json.loads((run / "metrics.json").read_text())
    metrics.pop("train_seconds")
    history = [json.loads(line) for line in (run / "history.jsonl").read_text().splitlines()]
    for record in history:
        record.pop("seconds")
    return metrics, history


def same_result(a: Path, b: Path) -> bool:
    return _tensors(a / "weights.safetensors") == _tensors(b / "weights.safetensors") and _timeless(a) == _timeless(b)


def strays(run: Path) -> list[str]:
    return sorted(str(p.relative_to(run)) for p in run.rglob("*") if p.name.endswith(".tmp"))


def trial(work: Path, reference: Path, strike: int, name: str) -> dict:
    out = work / name
    tmp = kill_during_write(work, out, strike)
    resumed = run_cli(["fit", "--resume", str(out), "--quiet"], work)
    ok = resumed.returncode == 0
    return {"strike": strike, "temporary_left_by_kill": tmp.name, "resume_exit": resumed.returncode,
            "identical": ok and same_result(reference, out), "strays": strays(out),
            "stderr": resumed.stderr.strip()[-300:]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--trials", type=int, default=20)
    p.add_argument("--work", default="kill-trials", help="scratch folder (default: kill-trials)")
    a = p.parse_args()
    work = Path(a.work).resolve()
    work.mkdir(parents=True, exist_ok=True)
    reference = uninterrupted(work)
    results = []
    for i in range(a.trials):
        strike = 1 + i % (EPOCHS - 1)  # every checkpoint write but the last, in turn
        results.append(trial(work, reference, strike, f"trial-{i:02d}"))
        r = results[-1]
        print(f"trial {i + 1}: killed in checkpoint write {strike}; resume exit {r['resume_exit']}, "
              f"identical {r['identical']}, strays {len(r['strays'])}", flush=True)
    summary = {"trials": len(results), "identical": sum(r["identical"] for r in results),
               "strays": sum(len(r["strays"]) for r in results), "results": results}
    (work / "kill_trials.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(f"{summary['identical']} of {summary['trials']} resumed runs identical to the uninterrupted one; "
          f"{summary['strays']} stray files")


if __name__ == "__main__":
    main()
