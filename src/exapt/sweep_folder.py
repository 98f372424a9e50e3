"""The folder of a resumable sweep of fits (`exapt compare`, `exapt transfer-map`).

    OUT/<marker>                 the sweep's settings (compare.yaml, transfer-map.yaml)
    OUT/runs/<name>/             one ordinary run folder per fit (run_folder.py)
    OUT/runs/<name>/<record>     the sweep's record of that fit (cell.json, transfer.json),
                                 written once the fit and its scoring are done

Run the same command again and only the missing fits are computed: a fit whose record
is there and whose config equals the one asked for is read back, an interrupted one
resumes from its checkpoint, and a fit made under another configuration is removed
rather than mixed in. A folder made with other settings is refused as a whole.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import yaml

from .config import FitConfig
from .errors import ExaptError
from .files import atomic_write_text
from .run_folder import RunFolder, check_can_be_folder


class SweepFolder:
    RUNS = "runs"

    def __init__(self, path, marker: str, record: str, kind: str, same=None):
        """`same(old, new)`: whether a fit's saved config is the one asked for (default: equal)."""
        self.path, self.marker, self.record, self.kind = Path(path), marker, record, kind
        self.same = same or (lambda old, new: old == new)

    def run(self, name: str) -> RunFolder:
        return RunFolder(self.path / self.RUNS / name)

    # -- the settings ---------------------------------------------------------------
    def prepare(self, settings: dict, overwrite: bool, *, defaults: dict | None = None, normalize=None) -> None:
        """Created, or reused when its marker holds the same settings; other settings are
        refused (naming what changed) unless --overwrite, and a non-empty folder of
        something else is never touched. An option the marker lacks (added to exapt after
        the folder was made) counts as its value in `defaults`, the settings of a default
        configuration; `normalize(old)` rewrites the marker's settings the way this version
        writes them (a strategy's spec gains options)."""
        out, marker = self.path, self.path / self.marker
        check_can_be_folder(out)
        if out.exists() and any(out.iterdir()) and not marker.exists():
            raise ExaptError(f"--out {out} is a non-empty folder that is not a {self.kind}; choose another")
        if marker.exists():
            try:
                old = _with_defaults(yaml.safe_load(marker.read_text())["settings"], defaults or {})
                old = normalize(old) if normalize else old
            except (OSError, yaml.YAMLError, KeyError, TypeError, AttributeError):
                old = None
            if old != settings:
                if not overwrite:
                    changed = _differences(old or {}, settings)
                    raise ExaptError(f"{out} holds a {self.kind} made with other settings ({changed}); "
                                     "choose another --out, or pass --overwrite to start it again")
                shutil.rmtree(out)
        out.mkdir(parents=True, exist_ok=True)

    def write_marker(self, content: dict) -> None:
        atomic_write_text(self.path / self.marker, yaml.safe_dump(content, sort_keys=False))

    # -- its fits -------------------------------------------------------------------
    def same_config(self, name: str, cfg: FitConfig) -> bool:
        try:
            return self.same(self.run(name).read_config(), cfg)
        except ExaptError:
            return False

    def read_record(self, name: str, cfg: FitConfig) -> dict | None:
        """The record of a finished fit made with `cfg`; None when missing or stale."""
        try:
            record = json.loads((self.run(name).path / self.record).read_text())
        except (OSError, ValueError):
            return None
        return record if self.same_config(name, cfg) else None

    def write_record(self, name: str, record: dict) -> None:
        atomic_write_text(self.run(name).path / self.record, json.dumps(record, indent=2) + "\n")

    def start_fit(self, name: str, cfg: FitConfig) -> tuple[RunFolder, bool]:
        """(the fit's folder, whether to resume it): a folder made under another
        configuration is removed first; one with the same configuration continues."""
        folder = self.run(name)
        same = self.same_config(name, cfg)
        if folder.path.exists() and not same:
            shutil.rmtree(folder.path)
        return folder, same

    def drop_weights(self, name: str) -> None:
        """A sweep needs only each fit's scores; a fine-tuned encoder is ~90 MB per fit
        (EWC's Fisher information as large, a PEFT adapter folder beside it)."""
        folder = self.run(name)
        folder.weights.unlink(missing_ok=True)
        folder.fisher.unlink(missing_ok=True)
        shutil.rmtree(folder.adapter, ignore_errors=True)


def _with_defaults(old: dict, defaults: dict) -> dict:
    """`old` with every key it lacks filled from `defaults` (nested sections too)."""
    out = dict(old)
    for k, v in defaults.items():
        if k not in out:
            out[k] = v
        elif isinstance(out[k], dict) and isinstance(v, dict):
            out[k] = _with_defaults(out[k], v)
    return out


def _differences(old: dict, new: dict, prefix: str = "") -> str:
    keys = []
    for k in sorted(set(old) | set(new)):
        a, b = old.get(k), new.get(k)
        if isinstance(a, dict) and isinstance(b, dict):
            inner = _differences(a, b, f"{prefix}{k}.")
            if inner:
                keys.append(inner)
        elif a != b:
            keys.append(f"{prefix}{k}: {a!r} -> {b!r}")
    return "; ".join(keys)
