"""`exapt.fit`: data -> splits -> task -> backbone + head -> strategy -> run folder.

Everything the user can get wrong (paths, columns, labels, options) is checked before
the run folder is created, so a bad call leaves nothing behind. The folder is marked
complete only when `metrics.json` is written, at the very end.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from .config import DataConfig, FitConfig
from .data import Table, load_data, sample_per_class, stratified_split
from .errors import ExaptError
from .run import Run, build_model, is_complete, write_outputs
from .strategies import parse_strategy
from .tasks import Task
from .train.checkpoint import atomic_write_text
from .train.features import FeatureCache, encode
from .train.loop import CHECKPOINT, Split, TrainConfig, predict_logits, train
from .train.probe import fit_linear_head
from .threads import configure_threads


def fit(data: str = "tweets", strategy: str = "linear-probe", model: str = "minilm-l6", *,
        text: str | None = None, label: str = "label", features=None, task: str = "auto",
        test: str | None = None, n_per_class: int | None = None, seed: int = 0,
        val_fraction: float = 0.2, test_fraction: float = 0.2, max_test: int = 2000, out: str | Path | None = None,
        pooling: str | None = None, max_length: int = 128, epochs: int | None = None,
        lr: float | None = None, batch_size: int = 16, patience: int = 5, overwrite: bool = False,
        progress: bool = True, log=print, **train_options) -> Run:
    """Fit one strategy on one data set and return the `Run` (also saved under `out`).

    >>> run = exapt.fit("tweets", strategy="lp-ft", n_per_class=16)   # doctest: +SKIP
    >>> run.evaluate("test.csv"); run.predict("new.csv")               # doctest: +SKIP
    """
    if isinstance(features, str):
        features = [f.strip() for f in features.split(",") if f.strip()]
    cfg = FitConfig(
        data=DataConfig(source=str(data), text=text, label=label, features=features, test=test,
                        test_fraction=test_fraction, max_test=max_test, val_fraction=val_fraction,
                        n_per_class=n_per_class, seed=seed),
        model=model, strategy=strategy, task=task, pooling=pooling, max_length=max_length,
        train=TrainConfig(epochs=epochs, lr=lr, batch_size=batch_size, patience=patience, seed=seed, **train_options),
    )
    return fit_config(cfg, out=out, overwrite=overwrite, progress=progress, log=log)


def resume(run_dir, progress: bool = True, log=print) -> Run:
    """Continue an interrupted fit from its last checkpoint (same result as no interruption)."""
    run_dir = Path(run_dir)
    if not (run_dir / "config.yaml").exists():
        raise ExaptError(f"--resume {run_dir}: no config.yaml there, so nothing to resume")
    if is_complete(run_dir):
        log(f"{run_dir} is already complete")
        return Run.load(run_dir)
    return fit_config(FitConfig.load(run_dir / "config.yaml"), out=run_dir, resume=True, progress=progress, log=log)


def _check_options(cfg: FitConfig) -> None:
    d, t = cfg.data, cfg.train
    checks = [
        (0 <= d.val_fraction < 1, f"--val-fraction must be in [0, 1) (got {d.val_fraction})"),
        (0 < d.test_fraction < 1 or (d.test and d.test_fraction == 0),
         f"--test-fraction must be in (0, 1) when no --test file is given (got {d.test_fraction})"),
        (t.patience >= 0, f"--patience must be >= 0 (got {t.patience})"),
        (d.n_per_class is None or d.n_per_class >= 1, f"--n-per-class must be >= 1 (got {d.n_per_class})"),
        (t.batch_size >= 1, f"--batch-size must be >= 1 (got {t.batch_size})"),
        (t.epochs is None or t.epochs >= 1, f"--epochs must be >= 1 (got {t.epochs})"),
        (t.lr is None or t.lr > 0, f"--lr must be > 0 (got {t.lr})"),
        (cfg.max_length >= 8, f"--max-length must be >= 8 (got {cfg.max_length})"),
    ]
    for ok, message in checks:
        if not ok:
            raise ExaptError(message)


def _default_out(cfg: FitConfig) -> Path:
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "-", Path(cfg.data.source).stem)
    base = Path("runs") / f"{stem}-{cfg.strategy.replace(':', '')}-s{cfg.data.seed}"
    path, i = base, 2
    while path.exists():
        path, i = Path(f"{base}-{i}"), i + 1
    return path


def _splits(cfg: FitConfig, table: Table, kind: str) -> tuple[Table, Table, Table]:
    d = cfg.data
    stratify = kind == "classification"
    if d.test:
        test = load_data(d.test, text=d.text, label=d.label, features=d.features)
        pool = table
    else:
        # named "train" so that every class keeps at least one example on the training side
        parts = stratified_split(table.labels, {"train": 1 - d.test_fraction, "test": d.test_fraction},
                                 seed=d.seed, stratify=stratify)
        pool, test_idx = table.subset(parts["train"]), parts["test"]
        if len(test_idx) > d.max_test:
            test_idx = np.sort(np.random.default_rng(d.seed).choice(test_idx, d.max_test, replace=False))
        test = table.subset(test_idx)
    if d.n_per_class:
        if kind != "classification":
            raise ExaptError("--n-per-class needs a single-label classification task")
        pool = pool.subset(sample_per_class(pool.labels, d.n_per_class, d.seed))
    parts = stratified_split(pool.labels, {"train": 1 - d.val_fraction, "val": d.val_fraction},
                             seed=d.seed, stratify=stratify)
    return pool.subset(parts["train"]), pool.subset(parts["val"]), test


def _prepare_out(out, cfg: FitConfig, resume: bool, overwrite: bool) -> Path:
    path = Path(out) if out else _default_out(cfg)
    if path.exists() and not resume:
        if is_complete(path) and not overwrite:
            raise ExaptError(f"{path} already holds a complete run; choose another --out or pass --overwrite")
        if not is_complete(path) and (path / "config.yaml").exists() and not overwrite:
            raise ExaptError(f"{path} holds an interrupted run; continue it with --resume {path} or pass --overwrite")
        if any(path.iterdir()) and not (path / "config.yaml").exists():
            raise ExaptError(f"--out {path} is a non-empty folder that is not a run; choose another")
    return path


def fit_config(cfg: FitConfig, out=None, resume: bool = False, overwrite: bool = False,
               progress: bool = True, log=print) -> Run:
    _check_options(cfg)
    strategy = parse_strategy(cfg.strategy)
    configure_threads()
    # -- everything that can fail on user input happens before the folder exists ---------
    table = load_data(cfg.data.source, text=cfg.data.text, label=cfg.data.label, features=cfg.data.features)
    task = Task.from_labels(cfg.task, table.labels, table.source)
    train_t, val_t, test_t = _splits(cfg, table, task.kind)
    task = Task.from_labels(task.kind, train_t.labels, f"{table.source} (training split)")
    y_train = task.encode(train_t.labels, train_t.rows, train_t.source)
    y_val = task.encode(val_t.labels, val_t.rows, val_t.source)
    y_test = task.encode(test_t.labels, test_t.rows, test_t.source)
    n_inputs = table.inputs.shape[1] if table.kind == "features" else None
    model = build_model(cfg, task, n_inputs, scratch=not strategy.uses_pretrained)
    bb = model.backbone
    if bb.input_kind != table.kind:
        hint = "use --text COLUMN with a text model" if bb.input_kind == "text" else "use --model mlp"
        raise ExaptError(f"--model {cfg.model!r} takes {bb.input_kind} inputs but the data has {table.kind} ({hint})")
    n_blocks = len(bb.blocks())
    if strategy.trains_encoder and strategy.first_trainable(n_blocks, 0) >= n_blocks:
        raise ExaptError(f"--strategy {cfg.strategy}: {cfg.model} has {n_blocks} blocks, so this leaves only the head "
                         "to train; use linear-probe, or freeze fewer blocks")
    if hasattr(bb, "fit_input_stats"):
        bb.fit_input_stats(train_t.inputs)
    path = _prepare_out(out, cfg, resume, overwrite)
    main = is_main_process()
    if not main:
        log = _silent  # under torchrun / accelerate launch, rank 0 alone writes and talks
    if main:
        if overwrite and path.exists() and not resume:
            shutil.rmtree(path)
        path.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path / "config.yaml", cfg.to_yaml())
        atomic_write_text(path / "labels.json", json.dumps(task.to_json(), indent=2) + "\n")

    log(f"{strategy.spec()} on {bb.describe()}: train {len(train_t)}, val {len(val_t)}, test {len(test_t)} ({task.kind})")
    started = time.perf_counter()
    items = {name: bb.prepare_inputs(t.inputs) for name, t in (("train", train_t), ("val", val_t), ("test", test_t))}
    splits = {name: Split(items[name], y, [bb.item_length(x) for x in items[name]])
              for name, y in (("train", y_train), ("val", y_val), ("test", y_test))}
    result = {"history": [], "ever_trainable": [], "best_epoch": 0, "epochs": 0}
    probe_info = {}
    test_features = None
    if not strategy.trains_encoder or strategy.fits_probe_first:
        feats = _features(bb, {"train": (train_t, items["train"]), "test": (test_t, items["test"])}, progress)
        probe_info = fit_linear_head(model.head, feats["train"], y_train, task, C=strategy.C)
        test_features = feats["test"]
    if strategy.trains_encoder:
        k = strategy.cacheable_prefix(model) if (cfg.train.cache_prefix and bb.supports_prefix) else 0
        train_splits = {n: _prefix_split(bb, splits[n], k) for n in ("train", "val")} if k else splits
        model.prefix_k = k
        try:
            result = train(model, strategy, task, train_splits["train"], train_splits["val"] if len(val_t) else None,
                           cfg.train, path, resume=resume, progress=progress and main, log=log)
        finally:
            model.prefix_k = 0
    train_seconds = time.perf_counter() - started
    if strategy.trains_encoder or test_features is None:
        test_logits = predict_logits(model, splits["test"])
    else:
        with torch.no_grad():
            test_logits = model.head(test_features)
    trainable = set(result["ever_trainable"]) | set(model.head_parameter_names())
    metrics = {
        "test": task.metrics(test_logits, y_test),
        "n_train": len(train_t), "n_val": len(val_t), "n_test": len(test_t),
        "strategy": strategy.spec(), "model": bb.identity()["model"],
        "trainable_parameters": sum(p.numel() for n, p in model.named_parameters() if n in trainable),
        "total_parameters": sum(p.numel() for p in model.parameters()),
        "train_seconds": round(train_seconds, 2), "epochs_run": len(result["history"]),
        "best_epoch": result["best_epoch"], **probe_info,
    }
    if len(val_t) and result["history"] and "val_loss" in result["history"][-1]:
        metrics["val"] = {k[4:]: v for k, v in result["history"][result["best_epoch"] - 1].items() if k.startswith("val_")}
    if main:
        write_outputs(path, model, trainable, metrics, result["history"])
        (path / CHECKPOINT).unlink(missing_ok=True)  # optimiser state is only for resuming
    shown = ", ".join(f"{k} {v:.4f}" for k, v in metrics["test"].items())
    log(f"test: {shown}  ->  {path}")
    model.eval()
    return Run(path, cfg, task, model)


def is_main_process() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def _silent(*_args, **_kwargs) -> None:
    pass


def _features(bb, parts: dict, progress: bool) -> dict[str, torch.Tensor]:
    if bb.input_kind == "text":
        cache = FeatureCache(bb)
        return {name: cache.features(t.inputs, prepared, progress=progress) for name, (t, prepared) in parts.items()}
    return {name: encode(bb, prepared, progress=False) for name, (t, prepared) in parts.items()}


@torch.no_grad()
def _prefix_split(bb, split: Split, k: int) -> Split:
    """Replace token ids by the frozen prefix's output, computed once, in eval mode."""
    was = bb.training
    bb.eval()
    states = []
    for start in range(0, len(split.items), 64):
        batch = bb.collate(split.items[start:start + 64])
        states += bb.forward_prefix(batch, k)
    bb.train(was)
    return Split(states, split.targets, split.lengths)
