"""Checkpoints and weights as safetensors, written atomically.

A training checkpoint is one .safetensors file: tensors (model, best-so-far model,
optimiser moments, torch RNG state) plus JSON metadata (epoch, history, scheduler,
numpy/python RNG states). One file means one `os.replace`: a run killed mid-write
keeps its previous checkpoint intact. No pickle anywhere.
"""
from __future__ import annotations

import errno
import json
import os
import random
import re
import tempfile
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from ..errors import ExaptError

META_KEY = "exapt"


def _umask_mode() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


class WriteError(ExaptError):
    """A file could not be written (full disk, read-only folder...); nothing half-written stays."""


# mkstemp's temporaries beside their target: NAME + 8 random characters + ".tmp"
_TEMPORARY = re.compile(r"^.+[a-z0-9_]{8}\.tmp$")


def _write_failed(path: Path, e: Exception) -> WriteError:
    reason = getattr(e, "strerror", None) or (str(e).strip().splitlines() or [type(e).__name__])[0]
    if getattr(e, "errno", None) == errno.ENOSPC or "No space left" in str(e):
        reason = "no space left on the device"
    return WriteError(f"cannot write {path}: {reason}")


def remove_stale_temporaries(folder: Path) -> list[Path]:
    """Delete what a write killed part-way left (NAME<random>.tmp) in `folder` and its
    sub-folders one level down; called when a run resumes or completes. Returns them."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    found = [p for pattern in ("*.tmp", "*/*.tmp") for p in folder.glob(pattern)
             if p.is_file() and _TEMPORARY.match(p.name)]
    for p in found:
        p.unlink(missing_ok=True)
    return found


def atomic_save_tensors(tensors: dict[str, torch.Tensor], path: Path, meta: dict | None = None) -> None:
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
        os.close(fd)
    except OSError as e:
        raise _write_failed(path, e) from None
    try:
        tensors = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
        save_file(tensors, tmp, metadata={META_KEY: json.dumps(meta or {})})
        os.chmod(tmp, _umask_mode())  # mkstemp makes 0600; a run is shared like any file
        os.replace(tmp, path)
    except (OSError, SafetensorError) as e:  # a full disk reaches safetensors' writer as its own error
        raise _write_failed(path, e) from None
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
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    except OSError as e:
        raise _write_failed(path, e) from None
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.chmod(tmp, _umask_mode())
        os.replace(tmp, path)
    except OSError as e:
        raise _write_failed(path, e) from None
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


# -- optimiser state <-> flat tensors ------------------------------------------------
def optimizer_to_tensors(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    sd = opt.state_dict()
    tensors, scalars = {}, {}
    for idx, state in sd["state"].items():
        for key, value in state.items():
            if torch.is_tensor(value):
                tensors[f"optim.{idx}.{key}"] = value
            else:
                scalars[f"{idx}.{key}"] = value
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def optimizer_from_tensors(opt: torch.optim.Optimizer, tensors: dict, meta: dict) -> None:
    state: dict[int, dict] = {}
    for name, value in tensors.items():
        if name.startswith("optim."):
            _, idx, key = name.split(".", 2)
            state.setdefault(int(idx), {})[key] = value
    for name, value in meta["scalars"].items():
        idx, key = name.split(".", 1)
        state.setdefault(int(idx), {})[key] = value
    opt.load_state_dict({"state": state, "param_groups": meta["param_groups"]})


# -- random number generators ------------------------------------------------------------
def rng_state() -> tuple[dict[str, torch.Tensor], dict]:
    np_state = np.random.get_state()
    meta = {
        "numpy": [np_state[0], np_state[1].tolist(), *np_state[2:]],
        "python": [random.getstate()[0], list(random.getstate()[1]), random.getstate()[2]],
    }
    return {"rng.torch": torch.get_rng_state()}, meta


def set_rng_state(tensors: dict, meta: dict) -> None:
    torch.set_rng_state(tensors["rng.torch"])
    n = meta["numpy"]
    np.random.set_state((n[0], np.array(n[1], dtype=np.uint32), *n[2:]))
    p = meta["python"]
    random.setstate((p[0], tuple(p[1]), p[2]))
