"""The run folder, and the one place that knows its layout.

    RUN/config.yaml             how it was made (FitConfig)
    RUN/labels.json             the task and its label encoding (+ the source head's)
    RUN/weights.safetensors     only what differs from the base model, plus the base
                                model's identity (name, sha256) in its header
    RUN/start.safetensors       the head as gradient training started (for interpolate)
    RUN/checkpoint.safetensors  while training: everything `--resume` needs; removed at the end
    RUN/fisher.safetensors      EWC's Fisher information, when that penalty was used
    RUN/adapter/                a PEFT adapter folder, for strategies that make one
    RUN/history.jsonl           one line per epoch
    RUN/decision.json           the decision rule tuned on validation (--decision,
                                --target-recall): temperature, prior shift, class offsets
    RUN/distil.json             a distilled / pruned run: its teacher, agreement, sizes, speeds
    RUN/metrics.json            written last: its presence marks a complete run

Every write is atomic (a temporary file beside the target, then a rename), so a reader
sees the old file or the new one. A run derived from another (`exapt merge`,
`exapt interpolate --save`) is written into a hidden sibling folder and renamed into
place whole, so a failed derivation leaves nothing that looks like a run.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import uuid
from pathlib import Path

from .config import FitConfig
from .errors import ExaptError
from .files import atomic_save_tensors, atomic_write_bytes, atomic_write_text, load_tensors, remove_stale_temporaries


class RunFolder:
    CONFIG = "config.yaml"
    LABELS = "labels.json"
    WEIGHTS = "weights.safetensors"
    START = "start.safetensors"
    CHECKPOINT = "checkpoint.safetensors"
    FISHER = "fisher.safetensors"
    ADAPTER = "adapter"
    HISTORY = "history.jsonl"
    DECISION = "decision.json"
    DISTIL = "distil.json"     # `exapt distil` / `exapt prune`: the teacher and what was kept
    METRICS = "metrics.json"   # written last: the completion marker
    AUDIT = "audit.json"       # `exapt audit`'s report (trust/audit.py), beside its ROC figure
    AUDIT_ROC = "audit-roc.png"

    def __init__(self, path):
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"RunFolder({str(self.path)!r})"

    # -- where things are -----------------------------------------------------------
    config = property(lambda self: self.path / self.CONFIG)
    labels = property(lambda self: self.path / self.LABELS)
    weights = property(lambda self: self.path / self.WEIGHTS)
    start = property(lambda self: self.path / self.START)
    checkpoint = property(lambda self: self.path / self.CHECKPOINT)
    fisher = property(lambda self: self.path / self.FISHER)
    adapter = property(lambda self: self.path / self.ADAPTER)
    history = property(lambda self: self.path / self.HISTORY)
    decision = property(lambda self: self.path / self.DECISION)
    distil = property(lambda self: self.path / self.DISTIL)
    metrics = property(lambda self: self.path / self.METRICS)
    audit = property(lambda self: self.path / self.AUDIT)
    audit_roc = property(lambda self: self.path / self.AUDIT_ROC)

    # -- what it holds --------------------------------------------------------------
    def is_run(self) -> bool:
        """A run folder, finished or not (an interrupted fit has its config already)."""
        return self.config.exists()

    def is_complete(self) -> bool:
        return self.metrics.exists() and self.weights.exists()

    # -- before writing -------------------------------------------------------------
    @classmethod
    def default_for(cls, cfg: FitConfig, root: Path = Path("runs")) -> "RunFolder":
        """runs/<data>-<strategy>-s<seed>, numbered -2, -3 ... when taken."""
        stem = re.sub(r"[^A-Za-z0-9_.-]+", "-", Path(cfg.data.source).stem)
        base = root / f"{stem}-{cfg.strategy.replace(':', '')}-s{cfg.data.seed}"
        path, i = base, 2
        while path.exists():
            path, i = Path(f"{base}-{i}"), i + 1
        return cls(path)

    def check_new(self, overwrite: bool, flag: str = "--out") -> None:
        """A folder a new run may be written to: refuse to clobber a complete run (unless
        --overwrite), a folder of the user's that is not a run at all, or a path that can
        never be a folder (an existing file, a path under a file)."""
        check_can_be_folder(self.path, flag)
        if not self.path.exists():
            return
        if self.is_complete() and not overwrite:
            raise ExaptError(f"{self.path} already holds a complete run; choose another --out or pass --overwrite")
        if any(self.path.iterdir()) and not self.is_run():
            raise ExaptError(f"--out {self.path} is a non-empty folder that is not a run; choose another")

    def check_fresh_fit(self, overwrite: bool) -> None:
        """`exapt fit` into this folder: as `check_new`, and an interrupted run is continued
        with --resume, never silently started again."""
        self.check_new(overwrite)
        if self.path.exists() and self.is_run() and not self.is_complete() and not overwrite:
            raise ExaptError(f"{self.path} holds an interrupted run; continue it with --resume {self.path} "
                             "or pass --overwrite")

    def create(self, overwrite: bool = False) -> None:
        if overwrite and self.path.exists():
            shutil.rmtree(self.path)
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as e:  # /proc/..., a read-only mount: places os.access cannot foresee
            raise ExaptError(f"--out {self.path}: cannot make this folder ({e.strerror or e})") from None

    def begin(self, cfg: FitConfig, labels: dict, *, overwrite: bool = False, resume: bool = False) -> None:
        """Make the folder of a fit and write what it starts with (config, labels); a
        resumed one first loses the temporary file a cut-short write left. If the first
        writes fail (a full disk), a folder this call made is removed again: an empty or
        config-less folder would look like a run to the next command."""
        made = not self.path.exists()
        self.create(overwrite=overwrite)
        if resume:
            self.remove_stale_temporaries()
        try:
            self.write_config(cfg)
            self.write_labels(labels)
        except BaseException:
            if made or overwrite:
                shutil.rmtree(self.path, ignore_errors=True)
            raise

    # -- writing --------------------------------------------------------------------
    def write_config(self, cfg: FitConfig) -> None:
        atomic_write_text(self.config, cfg.to_yaml())

    def write_labels(self, labels: dict) -> None:
        atomic_write_text(self.labels, json.dumps(labels, indent=2) + "\n")

    def write_start(self, tensors: dict) -> None:
        atomic_save_tensors(tensors, self.start)

    def write_weights(self, tensors: dict, base_model: dict) -> None:
        atomic_save_tensors(tensors, self.weights, {"base_model": base_model})

    def write_history(self, history: list[dict]) -> None:
        atomic_write_text(self.history, "".join(json.dumps(h) + "\n" for h in history))

    def write_decision(self, rule: dict) -> None:
        atomic_write_text(self.decision, json.dumps(rule, indent=2) + "\n")

    def write_distil(self, record: dict) -> None:
        atomic_write_text(self.distil, json.dumps(record, indent=2) + "\n")

    def write_audit(self, report: dict, roc_png: bytes) -> None:
        """A membership-inference audit of the finished run: the figure first, the report last."""
        atomic_write_bytes(self.audit_roc, roc_png)
        atomic_write_text(self.audit, json.dumps(report, indent=2) + "\n")

    def mark_complete(self, metrics: dict) -> None:
        """metrics.json goes last, so a half-written run never looks complete; the
        optimiser state (only for resuming) and any temporary file a killed write left
        go with it."""
        atomic_write_text(self.metrics, json.dumps(metrics, indent=2) + "\n")
        self.checkpoint.unlink(missing_ok=True)
        self.remove_stale_temporaries()

    def remove_stale_temporaries(self) -> None:
        remove_stale_temporaries(self.path)

    # -- reading --------------------------------------------------------------------
    def read_config(self) -> FitConfig:
        return FitConfig.load(self.config)

    def read_labels(self) -> dict:
        return json.loads(self.labels.read_text())

    def read_metrics(self) -> dict:
        return json.loads(self.metrics.read_text()) if self.metrics.exists() else {}

    def read_history(self) -> list[dict]:
        if not self.history.exists():
            return []
        return [json.loads(x) for x in self.history.read_text().splitlines() if x.strip()]

    def read_decision(self) -> dict | None:
        """The saved decision rule, or None for a run that decides by argmax."""
        return json.loads(self.decision.read_text()) if self.decision.exists() else None

    def read_distil(self) -> dict | None:
        return json.loads(self.distil.read_text()) if self.distil.exists() else None

    def read_weights(self) -> tuple[dict, dict]:
        """(tensors, header metadata); the header holds the base model's identity."""
        return load_tensors(self.weights)

    def read_start(self) -> dict:
        return load_tensors(self.start)[0]

    def weights_sha256(self) -> str:
        return hashlib.sha256(self.weights.read_bytes()).hexdigest()

    def check_base_model(self, recorded: dict, current: dict) -> None:
        """A run is never silently applied to a base model other than its own."""
        if recorded.get("sha256") and recorded["sha256"] != current.get("sha256"):
            raise ExaptError(
                f"{self.path}: the base model's weights differ from the ones this run was trained on "
                f"(recorded sha256 {recorded['sha256'][:12]}..., found {str(current.get('sha256'))[:12]}... "
                f"at {current.get('path')})")


def check_can_be_folder(path: Path, flag: str = "--out") -> None:
    """One line for an output path that can never be a folder: an existing file, a path
    under a file, or a place the user may not write."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ExaptError(f"{flag} {path} is a file; choose a folder")
    parent = path
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if parent.exists() and not parent.is_dir():
        raise ExaptError(f"{flag} {path}: {parent} is a file, so no folder can be made under it")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ExaptError(f"{flag} {path}: {parent} is not writable; choose another folder")


def publish_run(out: Path, overwrite: bool, write) -> RunFolder:
    """Write a derived run into a hidden sibling folder with `write(folder)`, then rename
    it into place: a failure leaves no half-written run, and a run already at `out` is
    replaced only once the new one is whole (and only with --overwrite)."""
    target = RunFolder(out)
    target.check_new(overwrite)
    target.path.parent.mkdir(parents=True, exist_ok=True)
    staging = RunFolder(target.path.parent / f".{target.path.name}.{uuid.uuid4().hex[:8]}.partial")
    staging.path.mkdir()
    try:
        write(staging)
        if target.path.exists():
            shutil.rmtree(target.path)
        os.replace(staging.path, target.path)
    finally:
        shutil.rmtree(staging.path, ignore_errors=True)
    return target
