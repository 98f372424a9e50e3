"""Run a compare panel in one process, sharing what the cells have in common.

Shared across cells: the data files (read once), the loaded pretrained model (kept
pristine, deep-copied per cell), the per-example frozen-feature cache (every probe and
the LP stage of LP-FT encode each text once), the tokenizer, and the interpreter itself.
Each cell is an ordinary run folder under DIR/runs/, so an interrupted panel picks up
where it stopped: finished cells are read back, an interrupted cell resumes from its
checkpoint, and a folder whose configuration differs from the panel's is never mixed in.
"""
from __future__ import annotations

import gc
import re
import shutil
import sys
import time
import warnings
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path

import pandas as pd
import yaml
from tqdm.auto import tqdm

from ..backbones import input_size, load_backbone, model_packages
from ..config import AdaptConfig, ClassesConfig, FitConfig, SourceConfig
from ..data import MemoLoader, fit_splits, load_table
from ..errors import ExaptError, StrategyDoesNotFit
from ..executors import parse_executor
from ..files import atomic_write_text
from ..fit import fit_config, resolve_defaults
from ..penalties import parse_penalties
from ..run_folder import RunFolder
from ..source import load_init, load_source_data
from ..strategies import parse_strategy
from ..train.optim import release_freed_memory
from ..sweep_folder import SweepFolder
from ..tasks import Task, higher_is_better, ranking_metric
from ..version import __version__
from .class_report import ranking_note, row_columns
from .panel import (ALL, DEFAULT_SIZES, DEFAULT_STRATEGIES, Cell, build_cells, parse_sizes, parse_strategies,
                    split_label, with_privacy)
from .report import write_report_with_recommendation
from .tracking import Tracker

SETTINGS = "compare.yaml"   # the panel's settings (its SweepFolder marker)
CELL_DONE = "cell.json"     # a finished cell's row
RESULTS = "results.csv"


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
            overrides: tuple[str, ...] = (), tracking: bool = True, tracking_uri: str | None = None,
            keep_weights: bool = False, overwrite: bool = False, progress: bool = True, log=print,
            command: str | None = None, executor: str | None = None, **options) -> Comparison:
    """Every strategy x size x seed on one data set, against training from scratch.

    `options` are the panel-wide fit options, named as in `exapt.fit` (text, label, features,
    task, test, val_fraction, test_fraction, max_test, pooling, max_length, epochs,
    batch_size, patience, init, source...); `overrides` are `--set key=value` for all cells.
    A panel entry may carry penalties (`full+ewc:1e4+lwf`); with `init=RUN` every cell
    starts from that run, and the results gain the source scores before and after and a
    `forgetting` column (`source`: a SourceConfig or a dict of its fields).

    >>> exapt.compare("tweets", strategies="linear-probe,lp-ft,scratch", n_per_class="8,32", seeds=2)  # doctest: +SKIP
    """
    base = FitConfig.from_options(data, model=model, overrides=overrides, **options)
    return compare_config(base, strategies, n_per_class, seeds, out, tracking=tracking, tracking_uri=tracking_uri,
                          keep_weights=keep_weights, overwrite=overwrite, progress=progress, log=log,
                          command=command or f"exapt.compare({data!r}, ...)", executor=executor)


def compare_config(base: FitConfig, strategies=DEFAULT_STRATEGIES, n_per_class=DEFAULT_SIZES, seeds: int = 3,
                   out: str | Path = "compare", *, tracking: bool = True, tracking_uri: str | None = None,
                   keep_weights: bool = False, overwrite: bool = False, progress: bool = True, log=print,
                   command: str = "", executor: str | None = None, privacy: str | None = None) -> Comparison:
    """`compare` on a panel-wide `FitConfig` (every cell's config, less its strategy, size and seed);
    `privacy` ("none,8,1") repeats each strategy once per privacy budget (panel.with_privacy)."""
    runner = parse_executor(executor)
    default_panel = parse_strategies(strategies) == list(DEFAULT_STRATEGIES)
    strategies = with_privacy(parse_strategies(strategies), privacy)
    if base.data.synthetic and "{" in base.data.source:  # source_row numbers the rows of one data file
        raise ExaptError("--synthetic belongs to the one data file it was made from; a {n}/{seed} pattern names many")
    _resolve_init(base, out, max(parse_strategy(split_label(s)[0]).reserved_positions for s in strategies))
    sizes = parse_sizes(n_per_class)
    cells = build_cells(base, strategies, sizes, seeds)
    sweep = SweepFolder(out, SETTINGS, CELL_DONE, "compare")
    loader = MemoLoader()
    kind = _check_inputs(cells, loader)  # every user error before the folder is touched
    unfit = _unfit_strategies(cells, loader, default_panel)
    if unfit:
        for label, why in unfit.items():
            log(f"compare: {label} left out of the default panel: {why}")
        strategies = [s for s in strategies if s not in unfit]
        cells = [cell for cell in cells if cell.strategy not in unfit]
    runner.start(packages=("exapt", *model_packages(base.model)))  # and every cluster error
    try:
        return _compare_cells(sweep, base, cells, loader, runner, kind,
                              {**_panel_meta(strategies, sizes, seeds, command), "left_out": unfit},
                              tracking, tracking_uri, keep_weights, overwrite, progress, log)
    finally:
        runner.close()


def _panel_meta(strategies, sizes, seeds, command) -> dict:
    return {"strategies": strategies, "n_values": sizes, "seeds": seeds, "command": command}


def _compare_cells(sweep: SweepFolder, base: FitConfig, cells: list[Cell], loader, runner, kind: str, panel: dict,
                   tracking, tracking_uri, keep_weights, overwrite, progress, log) -> Comparison:
    strategies, sizes, seeds = panel["strategies"], panel["n_values"], panel["seeds"]
    tracker = _open(sweep, base, overwrite, tracking, tracking_uri)
    counts = _class_counts(cells[0].cfg, kind, loader)
    metric, higher = ranking_metric(kind, counts), higher_is_better(kind)
    meta = {"data": base.data.source, "model": base.model, "task": kind, "metric": metric, "higher_is_better": higher,
            **panel, "exapt_version": __version__, "tracking_uri": tracker.uri if tracker else None}
    if ranking_note(counts, metric):
        meta["metric_note"] = ranking_note(counts, metric)
    if base.init:
        meta["init"] = base.init
    if base.data.synthetic:  # docs/augment.md: every cell fits each ALPHA and keeps the best on validation
        meta["synthetic"] = f"{base.data.synthetic}, ALPHA in {base.data.synthetic_weight} chosen on validation per cell"
    sweep.write_marker({"settings": _settings(base), "panel": {"strategies": strategies, "n_per_class": sizes,
                                                                "seeds": seeds}})
    rows = {cell.name: row for cell in cells if (row := sweep.read_record(cell.name, cell.cfg)) is not None}
    todo = [cell for cell in cells if cell.name not in rows]
    if rows:
        log(f"{sweep.path}: {len(rows)} of {len(cells)} cells already done; running the other {len(todo)}")
    started = time.perf_counter()
    try:
        _run_cells(sweep, cells, todo, rows, loader, tracker, keep_weights, progress, metric, runner)
    finally:
        if rows:
            results = _write_results(sweep.path, cells, rows)
            files = _write_report(sweep.path, results, meta, complete=len(rows) == len(cells))
    comparison = Comparison(sweep.path, results, meta, files.get("recommendation"), files)
    if todo:
        log(f"{len(todo)} cells in {time.perf_counter() - started:.0f} s")
    _announce(comparison, log)
    return comparison


def _open(sweep: SweepFolder, base: FitConfig, overwrite: bool, tracking: bool, tracking_uri) -> object:
    """The panel's folder, made or reused, and its MLflow tracker (None: not tracking);
    a tracker that cannot start leaves no folder behind that this call made."""
    created = not sweep.path.exists()
    sweep.prepare(_settings(base), overwrite, defaults=_settings(FitConfig()))
    if not tracking:
        return None

    try:
        return Tracker(sweep.path, tracking_uri)
    except ExaptError:
        if created:
            shutil.rmtree(sweep.path, ignore_errors=True)
        raise


def _run_cells(sweep: SweepFolder, cells: list[Cell], todo: list[Cell], rows: dict, loader, tracker,
               keep_weights: bool, progress: bool, metric: str, runner) -> None:
    """The missing cells, cheap first (in this process, or as tasks of a cluster), each
    recorded here, in the driver (and results.csv rewritten), as it ends."""
    bar = _bar(len(cells), len(rows), progress)
    by_name = {cell.name: cell for cell in todo}
    # in this process the cells share the data tables read once; a cluster's workers read their own
    work = partial(run_cell, sweep.path, keep_weights=keep_weights, progress=progress and runner.in_process,
                   loader=loader if runner.in_process else None)

    def done(name: str, row: dict) -> None:
        cell = by_name[name]
        rows[name] = _record_cell(sweep, cell, row, tracker)
        _write_results(sweep.path, cells, rows)
        bar.update(1)
        bar.write(f"  {cell.strategy:<14} n={str(cell.n):<4} seed={cell.seed}  "
                  f"{metric} {row.get('test_' + metric, float('nan')):.4f}  ({row['cell_seconds']:.0f} s)")

    try:
        runner.run(work, [(cell.name, (cell,)) for cell in todo], done, shared=sweep.path / SETTINGS)
    finally:
        bar.close()


def _announce(comparison: Comparison, log) -> None:
    files = comparison.files
    if comparison.recommendation:
        log(f"recommended: {comparison.recommendation['strategy']}")
        for reason in comparison.recommendation.get("reasons", [])[:3]:
            log(f"  - {reason}")
    log(f"report: {files['html']}  (and {files['md']}, {comparison.out / RESULTS})")


def _bar(total: int, done: int, progress: bool):
    return tqdm(total=total, initial=done, desc="compare", unit="cell", disable=not progress,
                dynamic_ncols=True, file=sys.stderr)


def _unfit_strategies(cells: list[Cell], loader, default_panel: bool) -> dict[str, str]:
    """Each strategy that trains the encoder checked against its model before anything
    runs (LoRA needs a transformer or an image backbone that names its targets; freeze:4
    needs more than 4 blocks): {strategy label: why} for those that cannot run. A panel
    the user listed stops on the first; the default panel leaves them out, since it was
    not chosen for this model."""
    unfit: dict[str, str] = {}
    backbones: dict = {}
    for cell in cells:
        strategy = parse_strategy(cell.cfg.strategy)
        if cell.strategy in unfit or not strategy.trains_encoder:
            continue
        cfg = cell.cfg
        key = (cfg.model, cfg.pooling, cfg.long)
        if key not in backbones:
            backbones.clear()  # one model in memory at a time
            # the scratch twin: the same blocks and modules, without reading the weights
            backbones[key] = load_backbone(cfg.model, n_inputs=input_size(load_table(cfg.data, loader)),
                                           pooling=cfg.pooling, max_length=cfg.max_length, seed=cfg.data.seed,
                                           scratch=True, long=cfg.long)
        try:
            strategy.check_backbone(backbones[key], cfg.strategy, cfg.model)
        except StrategyDoesNotFit as e:
            if not default_panel:
                raise
            unfit[cell.strategy] = str(e)
    return unfit


def _check_inputs(cells: list[Cell], loader) -> str:
    """Every file readable, every option valid, every size drawable, before DIR is touched."""
    kind, seen, source_checked = None, set(), False
    for cell in cells:
        cell.cfg.validate()
        parse_penalties(cell.cfg.penalties).check_static(bool(cell.cfg.init), bool(cell.cfg.source.corpus),
                                                         bool(cell.cfg.adapt.data))
        d = cell.cfg.data
        key = (d.source, d.n_per_class, d.seed)
        if key in seen:
            continue
        seen.add(key)
        table = load_table(d, loader)
        task = Task.from_labels(cell.cfg.task, table.labels, table.source)
        if kind not in (None, task.kind):
            raise ExaptError(f"{d.source}: a {task.kind} task, but other files of the panel are {kind}")
        kind = task.kind
        if cell.n != ALL and d.n_per_class and task.kind != "classification":
            raise ExaptError("--n-per-class needs a single-label classification task; give --n-per-class all")
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            fit_splits(d, table, task.kind, loader)
        if cell.cfg.init and not source_checked:
            source_checked = True
            load_source_data(cell.cfg, load_init(cell.cfg.init), loader)  # the source data read, once
        short = [str(w.message) for w in caught if "fewer than" in str(w.message)]
        if short:  # fit would quietly use what there is; in a panel that makes two sizes the same cells
            raise ExaptError(f"--n-per-class {cell.n}: {short[0].split(';')[0]} (after the test split); "
                             "use smaller sizes, or 'all'")
    return kind


def _class_counts(cfg: FitConfig, kind: str, loader) -> list[int] | None:
    """Single-label classification: the labelled data's class counts (the imbalance rule
    of tasks.ranking_metric reads them; a panel of pre-made files: its first file's);
    None otherwise."""
    if kind != "classification":
        return None
    labels = [str(v) for v in load_table(cfg.data, loader).labels]
    return [labels.count(c) for c in sorted(set(labels))]


def _resolve_init(base: FitConfig, out, reserve: int = 0) -> None:
    """--model / --pooling from the --init run, once for all cells (fit would do it per cell,
    and a cell's config must equal the panel's for an interrupted panel to resume); so is
    --max-length, which, not given, stays what an existing panel in `out` was made with
    (one from before it defaulted to the model's own holds 128, and resumes)."""
    if base.max_length is None:
        try:
            base.max_length = yaml.safe_load((Path(out) / SETTINGS).read_text())["settings"]["max_length"]
        except (OSError, yaml.YAMLError, KeyError, TypeError):
            pass
    resolve_defaults(base, load_init(base.init) if base.init else None, reserve)


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
    if d["classes"] == asdict(ClassesConfig()):  # and before --class-weight / --decision
        d.pop("classes")
    d["data"].pop("n_per_class")
    d["data"].pop("seed")
    d["train"].pop("seed")
    return d


def run_cell(out: Path, cell: Cell, keep_weights: bool = False, progress: bool = False, loader=None) -> dict:
    """One cell, fitted (or resumed) into OUT/runs/<cell>/: its results row. Picklable, so a
    cluster's worker can run it (exapt.executors); the record is the driver's to write."""
    sweep = SweepFolder(out, SETTINGS, CELL_DONE, "compare")
    folder, same = sweep.start_fit(cell.name, cell.cfg)
    _reset_peak_memory()
    started = time.perf_counter()
    if same and folder.metrics.exists():
        metrics = folder.read_metrics()  # finished, but its record was not written
        seconds = float("nan")
    else:
        # same configuration, not finished: an interrupted cell continues from its checkpoint
        run = fit_config(cell.cfg, out=folder.path, resume=same, progress=progress, log=lambda *a, **k: None,
                         loader=loader or _process_loader())
        metrics = run.metrics
        seconds = time.perf_counter() - started
        del run
    row = _row(cell, metrics, seconds, _peak_memory_mb(), same, folder)
    if not keep_weights:  # a full model is ~90 MB per cell; the panel needs only the metrics
        sweep.drop_weights(cell.name)
    gc.collect()
    release_freed_memory()
    return row


def _record_cell(sweep: SweepFolder, cell: Cell, row: dict, tracker) -> dict:
    """The driver's part of a finished cell: MLflow, then the record that marks it done."""
    if tracker is not None:
        row["mlflow_run_id"] = tracker.log_cell(cell.name, asdict(cell.cfg), _numeric(row), sweep.run(cell.name).path,
                                                {"strategy": cell.strategy, "n": cell.n, "seed": cell.seed})
    sweep.write_record(cell.name, row)
    return row


_PROCESS_LOADER = []


def _process_loader():
    """A cluster worker's own memo of the data tables, kept across the cells it runs."""
    if not _PROCESS_LOADER:
        _PROCESS_LOADER.append(MemoLoader())
    return _PROCESS_LOADER[0]


def _row(cell: Cell, metrics: dict, seconds: float, peak_mb: float, resumed: bool, folder: RunFolder) -> dict:
    n = cell.n
    if n == ALL:  # the per-class size the whole pool amounts to, so 'all' sits on the same axis
        classes = folder.read_labels().get("classes") or [None]
        n = round((metrics["n_train"] + metrics["n_val"]) / len(classes))
    row = {"cell": cell.name, "strategy": cell.strategy, "n": n, "n_label": str(cell.n), "seed": cell.seed,
           "n_train": metrics["n_train"], "n_val": metrics["n_val"], "n_test": metrics["n_test"]}
    row.update({f"test_{k}": v for k, v in metrics["test"].items()})
    for key in ("trainable_parameters", "total_parameters", "train_seconds", "epochs_run"):
        row[key] = metrics.get(key)
    row.update(source_columns(metrics))
    row.update(row_columns(metrics))
    synthetic = metrics.get("synthetic")
    if synthetic:  # --synthetic (docs/augment.md): the ALPHA chosen on validation, the rows it weighed
        row.update(synthetic_weight=synthetic["weight"], n_synth=synthetic["n_synth"],
                   n_eff=sum(c["n_eff"] for c in synthetic["per_class"].values()))
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
    atomic_write_text(out / RESULTS, frame.to_csv(index=False))
    return frame.reset_index(drop=True)


def _write_report(out: Path, results: pd.DataFrame, meta: dict, complete: bool) -> dict:
    meta = dict(meta, complete=complete, n_test=int(results["n_test"].iloc[0]) if len(results) else 0)
    if "synthetic_weight" in results.columns:  # the ALPHA each cell chose, seeds in order
        chosen = results.groupby(["strategy", "n"], sort=False)["synthetic_weight"]
        meta["synthetic_weight_chosen"] = "; ".join(f"{s} n={n}: {'/'.join(f'{v:g}' for v in values)}"
                                                    for (s, n), values in chosen)
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
