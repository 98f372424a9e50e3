"""Run a compare panel in one process, sharing what the cells have in common.

Shared across cells: the data files (read once), the loaded pretrained model (kept
pristine, deep-copied per cell), the per-example frozen-feature cache (every probe and
the LP stage of LP-FT encode each text once), the tokenizer, and the interpreter itself.
Each cell is an ordinary run folder under DIR/runs/, so an interrupted panel picks up
where it stopped: finished cells are read back, an interrupted cell resumes from its
checkpoint, and a folder whose configuration differs from the panel's is never mixed in.
"""
from __future__ import annotations

import ctypes
import gc
import json
import re
import shutil
import sys
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pandas as pd
import yaml

from ..config import AdaptConfig, DataConfig, FitConfig, SourceConfig, apply_override
from ..data import load_data
from ..errors import ExaptError
from ..train.checkpoint import atomic_write_text
from ..train.loop import TrainConfig
from .panel import ALL, DEFAULT_SIZES, DEFAULT_STRATEGIES, Cell, build_cells, parse_sizes, parse_strategies

SETTINGS = "compare.yaml"
CELL_DONE = "cell.json"
PRIMARY = {"classification": ("accuracy", True), "multilabel": ("macro_f1", True), "regression": ("rmse", False)}


@dataclass
class Comparison:
    """What `compare` returns: the results table, the recommendation, and where things are."""
    out: Path
    results: pd.DataFrame
    meta: dict
    recommendation: dict | None = None
    files: dict = field(default_factory=dict)


def compare(data: str = "tweets", model: str | None = None, strategies=DEFAULT_STRATEGIES,
            n_per_class=DEFAULT_SIZES, seeds: int = 3, out: str | Path = "compare", *,
            text=None, label: str = "label", features=None, task: str = "auto", test: str | None = None,
            val_fraction: float = 0.2, test_fraction: float = 0.2, max_test: int = 2000, pooling=None,
            max_length: int = 128, epochs: int | None = None, batch_size: int = 16, patience: int = 5,
            overrides: tuple[str, ...] = (), tracking: bool = True, tracking_uri: str | None = None,
            keep_weights: bool = False, overwrite: bool = False, progress: bool = True, log=print,
            init: str | None = None, source=None, command: str | None = None) -> Comparison:
    """Every strategy x size x seed on one data set, against training from scratch.

    A panel entry may carry penalties (`full+ewc:1e4+lwf`); with `init=RUN` every cell
    starts from that run, and the results gain the source scores before and after and a
    `forgetting` column (`source`: a SourceConfig or a dict of its fields).

    >>> exapt.compare("tweets", strategies="linear-probe,lp-ft,scratch", n_per_class="8,32", seeds=2)  # doctest: +SKIP
    """
    if isinstance(features, str):
        features = [f.strip() for f in features.split(",") if f.strip()]
    base = FitConfig(
        data=DataConfig(source=str(data), text=text, label=label, features=features, test=test,
                        test_fraction=test_fraction, max_test=max_test, val_fraction=val_fraction),
        model=model, task=task, pooling=pooling, max_length=max_length,
        train=TrainConfig(epochs=epochs, batch_size=batch_size, patience=patience),
        init=str(init) if init else None,
        source=source if isinstance(source, SourceConfig) else SourceConfig(**(source or {})),
    )
    for assignment in overrides:
        apply_override(base, assignment)
    _resolve_init(base)
    strategies = parse_strategies(strategies)
    sizes = parse_sizes(n_per_class)
    cells = build_cells(base, strategies, sizes, seeds)
    out = Path(out)
    loader = _MemoLoader()
    kind = _check_inputs(cells, loader)
    settings = _settings(base)
    created = not out.exists()
    prepare_settings_folder(out, settings, overwrite, defaults=_settings(FitConfig()))
    tracker = None
    if tracking:
        from .tracking import Tracker

        try:
            tracker = Tracker(out, tracking_uri)
        except ExaptError:
            if created:  # leave nothing behind
                shutil.rmtree(out, ignore_errors=True)
            raise
    metric, higher = PRIMARY[kind]
    meta = {"data": str(data), "model": base.model, "task": kind, "metric": metric, "higher_is_better": higher,
            "strategies": strategies, "n_values": sizes, "seeds": seeds,
            "command": command or f"exapt.compare({data!r}, ...)", "exapt_version": _version(),
            "tracking_uri": tracker.uri if tracker else None}
    if base.init:
        meta["init"] = base.init
    panel = {"strategies": strategies, "n_per_class": sizes, "seeds": seeds}
    atomic_write_text(out / SETTINGS, yaml.safe_dump({"settings": settings, "panel": panel}, sort_keys=False))

    rows, todo = {}, []
    for cell in cells:
        row = _finished_row(out, cell)
        if row is not None:
            rows[cell.name] = row
        else:
            todo.append(cell)
    if rows:
        log(f"{out}: {len(rows)} of {len(cells)} cells already done; running the other {len(todo)}")
    started = time.perf_counter()
    bar = _bar(len(cells), len(rows), progress)
    try:
        for cell in todo:
            bar.set_postfix_str(f"{cell.strategy} n={cell.n} seed={cell.seed}")
            row = _run_cell(out, cell, loader, tracker, keep_weights, progress)
            rows[cell.name] = row
            _write_results(out, cells, rows)
            bar.update(1)
            bar.write(f"  {cell.strategy:<14} n={str(cell.n):<4} seed={cell.seed}  "
                      f"{metric} {row.get('test_' + metric, float('nan')):.4f}  ({row['cell_seconds']:.0f} s)")
    finally:
        bar.close()
        if rows:
            results = _write_results(out, cells, rows)
            files = _write_report(out, results, meta, complete=len(rows) == len(cells))
    elapsed = time.perf_counter() - started
    comparison = Comparison(out, results, meta, files.get("recommendation"), files)
    if todo:
        log(f"{len(todo)} cells in {elapsed:.0f} s")
    if comparison.recommendation:
        log(f"recommended: {comparison.recommendation['strategy']}")
        for reason in comparison.recommendation.get("reasons", [])[:3]:
            log(f"  - {reason}")
    log(f"report: {files['html']}  (and {files['md']}, {out / 'results.csv'})")
    return comparison


def _bar(total: int, done: int, progress: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=done, desc="compare", unit="cell", disable=not progress,
                dynamic_ncols=True, file=sys.stderr)


class _MemoLoader:
    """`load_data`, read once per (file, columns) for the whole panel."""

    def __init__(self):
        self.tables = {}

    def __call__(self, source, **kw):
        key = (str(source), json.dumps(kw, sort_keys=True, default=str))
        if key not in self.tables:
            self.tables[key] = load_data(source, **kw)
        return self.tables[key]


def _check_inputs(cells: list[Cell], loader) -> str:
    """Every file readable, every option valid, every size drawable, before DIR is touched."""
    from ..fit import _check_options, _splits
    from ..tasks import Task

    from ..penalties import parse_penalties

    kind, seen, source_checked = None, set(), False
    for cell in cells:
        _check_options(cell.cfg)
        parse_penalties(cell.cfg.penalties).check_static(bool(cell.cfg.init), bool(cell.cfg.source.corpus),
                                                         bool(cell.cfg.adapt.data))
        d = cell.cfg.data
        key = (d.source, d.n_per_class, d.seed)
        if key in seen:
            continue
        seen.add(key)
        table = loader(d.source, text=d.text, label=d.label, features=d.features, image_size=d.image_size)
        task = Task.from_labels(cell.cfg.task, table.labels, table.source)
        if kind not in (None, task.kind):
            raise ExaptError(f"{d.source}: a {task.kind} task, but other files of the panel are {kind}")
        kind = task.kind
        if cell.n != ALL and d.n_per_class and task.kind != "classification":
            raise ExaptError("--n-per-class needs a single-label classification task; give --n-per-class all")
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            _splits(cell.cfg, table, task.kind, loader)
        if cell.cfg.init and not source_checked:
            from ..source import load_init, load_source_data

            source_checked = True
            load_source_data(cell.cfg, load_init(cell.cfg.init), loader)  # the source data read, once
        short = [str(w.message) for w in caught if "fewer than" in str(w.message)]
        if short:  # fit would quietly use what there is; in a panel that makes two sizes the same cells
            raise ExaptError(f"--n-per-class {cell.n}: {short[0].split(';')[0]} (after the test split); "
                             "use smaller sizes, or 'all'")
    return kind


def _resolve_init(base: FitConfig) -> None:
    """--model / --pooling from the --init run, once for all cells (fit would do it per cell,
    and a cell's config must equal the panel's for an interrupted panel to resume)."""
    from ..fit import resolve_defaults
    from ..source import load_init

    resolve_defaults(base, load_init(base.init) if base.init else None)


def _settings(base: FitConfig) -> dict:
    """The panel-wide configuration; cells made under other settings are never mixed in."""
    d = asdict(base)
    d.pop("strategy")
    d.pop("penalties")
    if d["init"] is None:  # panels without a source keep the settings they always had (resumable)
        d.pop("init")
    if d["source"] == asdict(SourceConfig()):
        d.pop("source")
    if d["adapt"] == asdict(AdaptConfig()):  # likewise for folders made before --adapt-to existed
        d.pop("adapt")
    d["data"].pop("n_per_class")
    d["data"].pop("seed")
    d["train"].pop("seed")
    return d


def prepare_settings_folder(out: Path, settings: dict, overwrite: bool, *, marker_name: str = SETTINGS,
                            kind: str = "compare", defaults: dict | None = None, normalize=None) -> None:
    """A resumable sweep's folder (compare, transfer map): created, or reused when its marker
    file holds the same settings; other settings are refused (naming what changed) unless
    --overwrite, and a non-empty folder of something else is never touched. An option the
    marker lacks (added to exapt after the folder was made) counts as its value in
    `defaults`, the settings of a default configuration; `normalize(old)` rewrites the
    marker's settings the way this version writes them (a strategy's spec gains options)."""
    if out.exists() and not out.is_dir():
        raise ExaptError(f"--out {out} is a file; choose a folder")
    marker = out / marker_name
    if out.exists() and any(out.iterdir()) and not marker.exists():
        raise ExaptError(f"--out {out} is a non-empty folder that is not a {kind}; choose another")
    if marker.exists():
        try:
            old = _with_defaults(yaml.safe_load(marker.read_text())["settings"], defaults or {})
            old = normalize(old) if normalize else old
        except (OSError, yaml.YAMLError, KeyError, TypeError, AttributeError):
            old = None
        if old != settings:
            if not overwrite:
                changed = _differences(old or {}, settings)
                raise ExaptError(f"{out} holds a {kind} made with other settings ({changed}); "
                                 "choose another --out, or pass --overwrite to start it again")
            shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)


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


def _finished_row(out: Path, cell: Cell) -> dict | None:
    folder = out / "runs" / cell.name
    try:
        row = json.loads((folder / CELL_DONE).read_text())
        same = FitConfig.load(folder / "config.yaml") == cell.cfg
    except (OSError, ValueError, ExaptError):
        return None
    return row if same else None


def _run_cell(out: Path, cell: Cell, loader, tracker, keep_weights: bool, progress: bool) -> dict:
    from ..fit import fit_config

    folder = out / "runs" / cell.name
    try:
        same = FitConfig.load(folder / "config.yaml") == cell.cfg
    except ExaptError:
        same = False
    _reset_peak_memory()
    started = time.perf_counter()
    if same and (folder / "metrics.json").exists():
        metrics = json.loads((folder / "metrics.json").read_text())  # finished, but its record was not written
        seconds = float("nan")
    else:
        if folder.exists() and not same:
            shutil.rmtree(folder)  # a stale cell of this compare, made under another configuration
        # same configuration, not finished: an interrupted cell continues from its checkpoint
        run = fit_config(cell.cfg, out=folder, resume=same, progress=progress, log=lambda *a, **k: None,
                         loader=loader)
        metrics = run.metrics
        seconds = time.perf_counter() - started
        del run
    row = _row(cell, metrics, seconds, _peak_memory_mb(), same, folder)
    if not keep_weights:  # a full model is ~90 MB per cell; the panel needs only the metrics
        (folder / "weights.safetensors").unlink(missing_ok=True)
        (folder / "fisher.safetensors").unlink(missing_ok=True)  # as large; ewc's cache keeps a copy
        shutil.rmtree(folder / "adapter", ignore_errors=True)
    if tracker is not None:
        row["mlflow_run_id"] = tracker.log_cell(cell.name, asdict(cell.cfg), _numeric(row), folder,
                                                {"strategy": cell.strategy, "n": cell.n, "seed": cell.seed})
    atomic_write_text(folder / CELL_DONE, json.dumps(row, indent=2) + "\n")
    gc.collect()
    _trim()
    return row


def _row(cell: Cell, metrics: dict, seconds: float, peak_mb: float, resumed: bool, folder: Path) -> dict:
    n = cell.n
    if n == ALL:  # the per-class size the whole pool amounts to, so 'all' sits on the same axis
        classes = json.loads((folder / "labels.json").read_text()).get("classes") or [None]
        n = round((metrics["n_train"] + metrics["n_val"]) / len(classes))
    row = {"cell": cell.name, "strategy": cell.strategy, "n": n, "n_label": str(cell.n), "seed": cell.seed,
           "n_train": metrics["n_train"], "n_val": metrics["n_val"], "n_test": metrics["n_test"]}
    row.update({f"test_{k}": v for k, v in metrics["test"].items()})
    for key in ("trainable_parameters", "total_parameters", "train_seconds", "epochs_run"):
        row[key] = metrics.get(key)
    row.update(source_columns(metrics))
    row.update({"cell_seconds": round(seconds, 2), "peak_rss_mb": peak_mb, "resumed": resumed})
    return row


def source_columns(metrics: dict) -> dict:
    """A cell's source side: every source metric before and after, and `forgetting` (the
    labelled source's primary metric lost; else the masked-LM loss gained)."""
    row = {}
    for key, prefix in (("source_mlm", "source_mlm_"), ("source", "source_")):
        s = metrics.get(key)
        if s:
            for when in ("before", "after"):
                row.update({f"{prefix}{k}_{when}": v for k, v in s[when].items()})
            row["forgetting"] = s["forgetting"]  # the labelled source, when both, is the one reported
    return row


def _numeric(row: dict) -> dict:
    return {k: v for k, v in row.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


def _write_results(out: Path, cells: list[Cell], rows: dict) -> pd.DataFrame:
    """results.csv: the panel's finished cells only, in panel order (strategy, n, seed)."""
    order = {s: i for i, s in enumerate(dict.fromkeys(c.strategy for c in cells))}
    chosen = [rows[c.name] for c in cells if c.name in rows]
    frame = pd.DataFrame(chosen)
    if len(frame):
        frame = frame.sort_values(["strategy", "n", "seed"], key=lambda s: s.map(order) if s.name == "strategy" else s)
    atomic_write_text(out / "results.csv", frame.to_csv(index=False))
    return frame.reset_index(drop=True)


def _write_report(out: Path, results: pd.DataFrame, meta: dict, complete: bool) -> dict:
    from .report import write_report_with_recommendation

    meta = dict(meta, complete=complete, n_test=int(results["n_test"].iloc[0]) if len(results) else 0)
    files, recommendation = write_report_with_recommendation(out, results, meta)
    return {**files, "recommendation": recommendation}


def _reset_peak_memory() -> None:
    """Linux: writing 5 to clear_refs resets VmHWM, so each cell gets its own peak."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def _peak_memory_mb() -> float:
    try:
        status = Path("/proc/self/status").read_text()
        return round(int(re.search(r"VmHWM:\s+(\d+)", status).group(1)) / 1024, 1)
    except (OSError, AttributeError):
        return float("nan")


def _trim() -> None:
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except OSError:
        pass


def _version() -> str:
    from .. import __version__

    return __version__
