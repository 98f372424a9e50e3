"""Shared bits of the benchmarks: paths, the MiniLM folder, result files."""
from __future__ import annotations

import json
import os
import platform
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

ROOT = Path(__file__).resolve().parent
RESULTS = ROOT / "results"
TWEETS = Path(os.environ.get("EXAPT_TWEETS", ROOT.parent.parent / "shared" / "data" / "tweets"))


def minilm_dir() -> Path:
    from exapt.backbones import resolve_alias

    return resolve_alias("minilm-l6")


def read_csv(path: Path):
    import pandas as pd

    return pd.read_csv(path)


def machine() -> dict:
    import torch
    import transformers

    return {"cpu_cores": os.cpu_count(), "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
            "transformers": transformers.__version__, "python": platform.python_version()}


def write_json(path: Path, data) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2) + "\n")
