"""Files written whole or not at all: the bottom layer's file I/O.

Every writer writes to a temporary file beside its target, then renames it over the
target (`os.replace` is atomic on one file system): a reader sees the old file or the
new one, never half of one, and a run killed mid-write keeps its previous file intact.
A write that fails (a full disk, a read-only folder) raises `WriteError`, one line, and
leaves no temporary behind; one killed part-way leaves `NAME<random>.tmp`, which
`remove_stale_temporaries` deletes when a run resumes or completes. Tensors are
safetensors with JSON metadata: no pickle anywhere.
"""
from __future__ import annotations

import errno
import json
import os
import re
import tempfile
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from .errors import ExaptError

META_KEY = "exapt"


def file_mode() -> int:
    """The mode a new file gets under this process's umask (mkstemp makes 0600)."""
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
        os.chmod(tmp, file_mode())  # mkstemp makes 0600; a run is shared like any file
        os.replace(tmp, path)
    except (OSError, SafetensorError) as e:  # a full disk reaches safetensors' writer as its own error
        raise _write_failed(path, e) from None
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def load_tensors(path: Path) -> tuple[dict[str, torch.Tensor], dict]:
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
        os.chmod(tmp, file_mode())
        os.replace(tmp, path)
    except OSError as e:
        raise _write_failed(path, e) from None
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))
