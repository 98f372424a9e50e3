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

    return {"cpu": cpu_model(), "cpu_cores": os.cpu_count(), "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
            "transformers": transformers.__version__, "python": platform.python_version()}


def cpu_model() -> str:
    """The processor's name and the vector extensions that decide fp32/int8 speed."""
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or "unknown"
    name = next((ln.split(":", 1)[1].strip() for ln in info.splitlines() if ln.startswith("model name")), "unknown")
    flags = next((ln.split(":", 1)[1].split() for ln in info.splitlines() if ln.startswith("flags")), [])
    wanted = ("avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_tile")
    return f"{name} ({', '.join(f for f in wanted if f in flags) or 'no AVX2'})"


def write_json(path: Path, data) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2) + "\n")
