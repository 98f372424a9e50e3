"""Files written whole or not at all: the bottom layer's file I/O.

Every writer writes to a temporary file beside its target, then renames it over the
target (`os.replace` is atomic on one file system): a reader sees the old file or the
new one, never half of one, and a run killed mid-write keeps its previous file intact.
Tensors are safetensors with JSON metadata: no pickle anywhere.
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

META_KEY = "exapt"


def file_mode() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def atomic_save_tensors(tensors: dict[str, torch.Tensor], path: Path, meta: dict | None = None) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    os.close(fd)
    try:
        tensors = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
        save_file(tensors, tmp, metadata={META_KEY: json.dumps(meta or {})})
        os.chmod(tmp, file_mode())  # mkstemp makes 0600; a run is shared like any file
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def load_tensors(path: Path) -> tuple[dict[str, torch.Tensor], dict]:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        meta = json.loads((f.metadata() or {}).get(META_KEY, "{}"))
    return load_file(str(path)), meta


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write to a temporary file beside `path`, then rename: a reader sees the old file
    or the new one, never half of one; a failed write leaves no temporary behind."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.chmod(tmp, file_mode())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def remove_stale_temporaries(folder: Path) -> None:
    """Temporary files a killed write left behind (`NAME<random>.tmp`, beside the file it
    was replacing): they are never read, and one can be as large as a model."""
    folder = Path(folder)
    if folder.is_dir():
        for stale in folder.glob("*.tmp"):
            if stale.is_file():
                stale.unlink(missing_ok=True)
