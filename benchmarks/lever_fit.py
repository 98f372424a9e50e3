"""Two levers of issue 25 measured through `exapt.fit` itself, each case in a fresh process
(docs/speed.md): seconds of training and the process's peak memory (VmHWM).

  lora-ckpt-on / lora-ckpt-off   lora, 960 tweets, 1 epoch, batch 32, 64 tokens, with
                                 --set train.activation_checkpointing=true / false
  full-64                        full fine-tuning, the same rows (the memory reference)
  full-256-heap / full-256-glibc full, 192 documents of >= 256 tokens, 2 epochs, batch 32,
                                 with exapt's training_heap / with glibc's defaults

    python benchmarks/lever_fit.py lora-ckpt-on lora-ckpt-off full-64 full-256-heap full-256-glibc
Run it alone.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

CHILD = r"""
import contextlib, json, sys, tempfile
from pathlib import Path
import exapt
from exapt.train import loop
from common import TWEETS
from speed import long_documents

case = sys.argv[1]
tmp = Path(tempfile.mkdtemp(prefix="exapt-lever-"))
options = dict(epochs=1, max_length=64)
strategy, data = case.split("-")[0], TWEETS / "throughput_960.csv"
if case.startswith("lora-ckpt"):
    options["activation_checkpointing"] = case.endswith("-on")
if case.startswith("full-256"):
    data, options = long_documents(tmp), dict(epochs=2, max_length=256)
    if case.endswith("-glibc"):
        loop.training_heap = contextlib.nullcontext
run = exapt.fit(str(data), strategy, "minilm-l6", test=str(TWEETS / "train_n8_s0.csv"), val_fraction=0, batch_size=32,
                out=tmp / "run", progress=False, log=lambda *a: None, **options)
peak = int(next(ln for ln in open("/proc/self/status") if ln.startswith("VmHWM")).split()[1]) // 1024
print(json.dumps({"case": case, "train_s": run.history[-1]["seconds"], "peak_mb": peak}), flush=True)
"""


def main() -> None:
    for case in sys.argv[1:]:
        subprocess.run([sys.executable, "-c", CHILD, case], check=True, cwd=str(Path(__file__).resolve().parent))


if __name__ == "__main__":
    main()
