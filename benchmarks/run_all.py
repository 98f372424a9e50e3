"""Every benchmark, one after another (never two at once: 2 cores distort timings)."""
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
for script in ("accuracy_tweets.py", "speed.py", "peft_bench.py", "compare_bench.py", "rank_bench.py", "shift_bench.py", "adapt_bench.py", "pretrain_bench.py", "collect.py"):
    print(f"== {script}", flush=True)
    subprocess.run([sys.executable, str(HERE / script)], check=True)
