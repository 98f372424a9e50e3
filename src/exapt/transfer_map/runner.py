"""Fit on each source domain, score on every domain's test split: the transfer map.

One fit per (source, seed), through the same `fit_config` as `exapt fit`, in one process:
data read once, the pretrained model loaded once (the backbone loader keeps a pristine
copy), frozen features cached per example on disk (so a linear probe encodes each text
once, ever) and, for strategies that leave the encoder frozen, each target's test
features computed once for all fits. Each fit is an ordinary run folder under DIR/runs/
with a `transfer.json` beside it once every target is scored: run the same command again
and finished fits are skipped, an interrupted one resumes, and a folder made with other
settings is refused, naming what changed.
"""
from __future__ import annotations

import json
import sys
import time
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path

import pandas as pd
import torch
import yaml
from tqdm.auto import tqdm

from ..backbones import load_backbone, model_packages
from ..config import FitConfig
from ..data import load_data
from ..errors import ExaptError
from ..executors import parse_executor
from ..files import atomic_write_text
from ..fit import fit_config
from ..run import Run
from ..strategies import parse_strategy
from ..sweep_folder import SweepFolder
from ..train.features import FeatureCache
from .domains import Domain, check_sizes, fingerprint, load_domains, parse_domains, split_files, split_texts
from .report import write_outputs

SETTINGS = "transfer-map.yaml"
FIT_DONE = "transfer.json"


@dataclass
class TransferMap:
    """What `transfer_map` returns: one row per (source, target, seed), the mean accuracy
    matrix (rows: source, columns: target) and the files written."""
    out: Path
    results: pd.DataFrame
    accuracy: pd.DataFrame
    meta: dict
    files: dict = field(default_factory=dict)


def transfer_map(domains, model: str = "minilm-l6", strategy: str = "linear-probe", n_per_class: int = 64,
                 seeds: int = 3, out: str | Path = "transfer-map", *, text=None, label: str = "label",
                 test_fraction: float = 0.2, max_test: int = 500, val_fraction: float = 0.2,
                 max_length: int = 64, epochs: int | None = None, batch_size: int = 16, patience: int = 5,
                 keep_weights: bool = False, overwrite: bool = False, progress: bool = True, log=print,
                 command: str | None = None, executor: str | None = None) -> TransferMap:
    """Train on each domain, test on every domain; `executor`: where the fits run, "local"
    or "ray[:ADDRESS][,...]" (exapt.executors, docs/scale.md).

    >>> transfer_map("tweets-airline,tweets-apple", n_per_class=16, seeds=2, out="tm")  # doctest: +SKIP
    """
    if isinstance(text, str) and "," in text:
        text = [c.strip() for c in text.split(",") if c.strip()]
    if not isinstance(seeds, int) or seeds < 1:
        raise ExaptError(f"--seeds must be >= 1 (got {seeds})")
    if not isinstance(n_per_class, int) or n_per_class < 1:
        raise ExaptError(f"--n-per-class must be >= 1 (got {n_per_class})")
    runner = parse_executor(executor)
    names = parse_domains(domains)
    parsed = parse_strategy(strategy)
    base = FitConfig.from_options(None, val_fraction=val_fraction, n_per_class=n_per_class, model=model,
                                  strategy=strategy, max_length=max_length, epochs=epochs, batch_size=batch_size,
                                  patience=patience)  # each domain's data is set per fit
    base.validate()
    found = load_domains(names, text=text, label=label, test_fraction=test_fraction, max_test=max_test)
    check_sizes(found, n_per_class)
    _check_model(base, parsed)
    runner.start(packages=("exapt", *model_packages(model)))   # cluster errors, too, before the folder is made
    options = dict(model=model, strategy=parsed.spec(), n_per_class=n_per_class, test_fraction=test_fraction,
                   max_test=max_test, val_fraction=val_fraction, max_length=max_length, epochs=epochs,
                   batch_size=batch_size, patience=patience)   # in the order transfer-map.yaml lists them
    try:
        return _map(runner, Path(out), found, base, seeds, text, label, options,
                    command or f"exapt.transfer_map({','.join(names)!r}, ...)", keep_weights, overwrite, progress, log)
    finally:
        runner.close()


def _map(runner, out: Path, found: list[Domain], base: FitConfig, seeds: int, text, label, options: dict,
         command: str, keep_weights: bool, overwrite: bool, progress: bool, log) -> TransferMap:
    splits = {d.name: split_texts(d) for d in found}
    settings = _settings(found, splits, text, label, **options)
    _claim_folder(out, settings, seeds, found, splits, overwrite)   # user errors are behind us
    fits = [(d, seed, _fit_config(base, out, d, seed)) for d in found for seed in range(seeds)]
    records = _finished_records(out, fits, found)
    if records:
        log(f"{out}: {len(records)} of {len(fits)} fits already done; running the other {len(fits) - len(records)}")
    meta = {"domains": [d.name for d in found], "model": options["model"], "strategy": options["strategy"],
            "n_per_class": options["n_per_class"], "seeds": seeds, "max_length": options["max_length"],
            "n_test": {d.name: len(d.test) for d in found},
            "majority": {d.name: _majority(d) for d in found},
            "command": command}
    results, accuracy, files = _run_fits(out, found, fits, records, meta, keep_weights, progress, log, runner)
    log(f"transfer map: {files['png']}  (and {files['md']}, {files['csv']})")
    return TransferMap(out, results, accuracy, meta, files)


def _settings(found: list[Domain], splits: dict, text, label: str, **options) -> dict:
    """What a map folder was made with (`options` in the order transfer-map.yaml lists them),
    down to a fingerprint of each domain's examples."""
    return {**options,
            "domains": {d.name: {"source": d.source, **({"text": text, "label": label} if d.is_file else {}),
                                 "n_pool": len(d.pool), "n_test": len(d.test),
                                 "examples": fingerprint(*splits[d.name])} for d in found}}


def _claim_folder(out: Path, settings: dict, seeds: int, found: list[Domain], splits: dict, overwrite: bool) -> None:
    """Refuse a folder made with other settings; write each domain's split files and the settings."""
    sweep_folder(out).prepare(settings, overwrite, normalize=_current_spec)
    for d in found:
        for path, content in zip(split_files(out, d), splits[d.name]):
            if not path.exists() or path.read_text() != content:
                atomic_write_text(path, content)
    atomic_write_text(out / SETTINGS, yaml.safe_dump({"settings": settings, "seeds": seeds}, sort_keys=False))


def _finished_records(out: Path, fits: list, found: list[Domain]) -> dict:
    """{(source, seed): its transfer.json} for the fits an earlier run finished."""
    records = {}
    for d, seed, cfg in fits:
        record = _finished(out, d, seed, cfg, found)
        if record is not None:
            records[(d.name, seed)] = record
    return records


def _run_fits(out: Path, found: list[Domain], fits: list, records: dict, meta: dict, keep_weights: bool,
              progress: bool, log, runner) -> tuple:
    """Run the fits not yet done (here, or as tasks of a cluster), scoring each on every
    domain; each fit's record is written here, in the driver, as it ends; write the map's
    files even when interrupted (from the fits finished so far). Returns (results, accuracy, files)."""
    todo = [(d, s, c) for d, s, c in fits if (d.name, s) not in records]
    started = time.perf_counter()
    bar = _bar(len(fits), len(records), progress)
    # in this process the fits share one evaluator (test tables and frozen test features); a worker keeps its own
    work = partial(fit_source, out, domains=found, keep_weights=keep_weights, progress=progress and runner.in_process,
                   evaluator=_Evaluator(out, found) if runner.in_process else None)

    def done(key: tuple, record: dict) -> None:
        name, seed = key
        sweep_folder(out).write_record(_fit_name(next(d for d in found if d.name == name), seed), record)
        records[key] = record
        rows = record["targets"]
        own = next(r["accuracy"] for r in rows if r["target"] == name)
        bar.update(1)
        line = (f"  {name} seed={seed}: in-domain accuracy {own:.4f}; "
                + ", ".join(f"{r['target']} {r['accuracy']:.4f}" for r in rows if r["target"] != name))
        if progress:
            bar.write(line)
        else:
            log(line)   # tqdm.write would print even with the bar off (--quiet)

    try:
        runner.run(work, [((d.name, seed), (d, seed, cfg)) for d, seed, cfg in todo], done, shared=out / SETTINGS)
    finally:
        bar.close()
        if records:
            results = _results(found, meta["seeds"], records)
            meta["complete"] = len(records) == len(fits)
            files, accuracy = write_outputs(out, results, meta)
    if todo:
        log(f"{len(todo)} fits in {time.perf_counter() - started:.0f} s")
    return results, accuracy, files


def _check_model(base: FitConfig, strategy) -> None:
    """Load the model once now (cheap: the loader keeps it for the fits) so a bad --model
    is reported before the output folder exists."""
    bb = load_backbone(base.model, pooling=base.pooling, max_length=base.max_length, seed=0,
                       scratch=not strategy.uses_pretrained)
    if bb.input_kind != "text":
        raise ExaptError(f"--model {base.model!r} takes {bb.input_kind} inputs; a transfer map compares text domains")


def _fit_config(base: FitConfig, out: Path, d: Domain, seed: int) -> FitConfig:
    pool, test = split_files(out, d)
    cfg = FitConfig.from_dict(asdict(base))
    cfg.data.source, cfg.data.test, cfg.data.text, cfg.data.label = str(pool), str(test), "text", "label"
    cfg.data.test_fraction = 0.0   # the test split is the file: nothing more is split off
    cfg.data.seed = cfg.train.seed = seed
    return cfg


def _bar(total: int, done: int, progress: bool):
    return tqdm(total=total, initial=done, desc="transfer-map", unit="fit", disable=not progress,
                dynamic_ncols=True, file=sys.stderr)


def sweep_folder(out: Path) -> SweepFolder:
    return SweepFolder(out, SETTINGS, FIT_DONE, "transfer map", same=_same_fit)


def _fit_name(d: Domain, seed: int) -> str:
    return f"{d.slug}-s{seed}"


def _same_fit(old: FitConfig, cfg: FitConfig) -> bool:
    """The folder holds (part of) this fit. The split files are compared by name, not by
    path, so a map folder that was moved or reached by another path is still resumed (the
    settings' fingerprint has already checked that the splits hold the same examples)."""
    old, new = FitConfig.from_dict(asdict(old)), FitConfig.from_dict(asdict(cfg))
    for c in (old, new):
        c.data.source, c.data.test = Path(c.data.source).name, Path(c.data.test or "").name
    return old == new


def _finished(out: Path, d: Domain, seed: int, cfg: FitConfig, domains: list[Domain]) -> dict | None:
    record = sweep_folder(out).read_record(_fit_name(d, seed), cfg)
    scored = [r.get("target") for r in (record or {}).get("targets", [])]
    return record if record is not None and scored == [x.name for x in domains] else None


def fit_source(out: Path, d: Domain, seed: int, cfg: FitConfig, domains: list[Domain], keep_weights: bool = False,
               progress: bool = False, evaluator=None) -> dict:
    """One fit on source `d`, scored on every domain: its record (the driver writes it).
    Picklable, so a cluster's worker can run it (exapt.executors)."""
    evaluator = evaluator or _process_evaluator(out, domains)
    sweep, name = sweep_folder(out), _fit_name(d, seed)
    folder, same = sweep.start_fit(name, cfg)   # a stale fit of this map, made under another configuration, is removed
    started = time.perf_counter()
    if same and folder.is_complete():
        run = Run.load(folder.path)   # fitted, but stopped before every target was scored
    else:  # same configuration, not finished: an interrupted fit continues from its checkpoint
        run = fit_config(cfg, out=folder.path, resume=same, progress=progress, log=lambda *a, **k: None,
                         loader=evaluator.loader)
    metrics = run.metrics
    record = {"source": d.name, "seed": seed, "n_train": metrics.get("n_train"), "n_val": metrics.get("n_val"),
              "train_seconds": metrics.get("train_seconds"),
              "targets": [{"target": t.name, **evaluator.score(run, t)} for t in domains]}
    record["fit_seconds"] = round(time.perf_counter() - started, 2)
    if not keep_weights:   # the map needs only the scores
        sweep.drop_weights(name)
    return record


_EVALUATORS: dict = {}


def _process_evaluator(out: Path, domains: list[Domain]):
    """A cluster worker's evaluator, kept across the fits of one map that it runs."""
    key = (str(out), tuple(d.name for d in domains))
    if key not in _EVALUATORS:
        _EVALUATORS.clear()
        _EVALUATORS[key] = _Evaluator(out, domains)
    return _EVALUATORS[key]


class _Evaluator:
    """Scores a fitted run on each domain's test split; test files are read once, and for a
    frozen encoder (linear probe) each target's features are computed once for all fits."""

    def __init__(self, out: Path, domains: list[Domain]):
        self.tests = {d.name: split_files(out, d)[1] for d in domains}
        self.tables: dict = {}
        self.features: dict = {}

    def loader(self, source, **kw):
        key = (str(source), json.dumps(kw, sort_keys=True, default=str))
        if key not in self.tables:
            self.tables[key] = load_data(source, **kw)
        return self.tables[key]

    def score(self, run, target: Domain) -> dict:
        table = self.loader(str(self.tests[target.name]), text="text", label="label", features=None)
        bb = run.model.backbone
        if parse_strategy(run.config.strategy).trains_encoder:
            logits = run.logits(table)
        else:
            key = (target.name, json.dumps(bb.identity(), sort_keys=True, default=str))
            if key not in self.features:
                self.features[key] = FeatureCache(bb).features(table.inputs, bb.prepare_inputs(table.inputs),
                                                               progress=False)
            with torch.no_grad():
                logits = run.model.head(self.features[key])
        targets = run.task.encode(table.labels, table.rows, table.source)
        return {"n_test": len(table), **run.task.metrics(logits, targets)}


def _majority(d: Domain) -> float:
    """Accuracy of always answering the most common training label, on the test split: the
    floor a transferred model should clear (domains differ a lot in label balance)."""
    labels = d.table.labels
    pool = pd.Series([labels[i] for i in d.pool]).value_counts()
    test = [labels[i] for i in d.test]
    return sum(y == pool.index[0] for y in test) / len(test)


def _results(domains: list[Domain], seeds: int, records: dict) -> pd.DataFrame:
    rows = []
    for d in domains:
        for seed in range(seeds):
            record = records.get((d.name, seed))
            if record is None:
                continue
            for r in record["targets"]:
                rows.append({"source": d.name, "target": r["target"], "seed": seed,
                             "in_domain": r["target"] == d.name, "n_train": record["n_train"],
                             "n_val": record["n_val"], **{k: v for k, v in r.items() if k != "target"}})
    return pd.DataFrame(rows)


def _current_spec(old: dict) -> dict:
    """A marker's strategy as this version spells it: a spec written before the strategy
    gained an option (lp-ft's pairs) names the same strategy, so the folder resumes."""
    try:
        return {**old, "strategy": parse_strategy(str(old["strategy"])).spec()}
    except (ExaptError, KeyError):
        return old
