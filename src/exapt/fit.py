"""`exapt.fit`: data -> splits -> task -> backbone + head -> strategy -> run folder.

Everything the user can get wrong (paths, columns, labels, options) is checked before
the run folder is created, so a bad call leaves nothing behind. The folder is marked
complete only when `metrics.json` is written, at the very end.
"""
from __future__ import annotations

import copy
import os
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from .adapt.in_fit import StartFeatures, check_selection, selection_record, target_splits, weighted_validation
from .adapt.target import load_target
from .backbones import check_input_kind, input_size, model_max_length
from .config import FitConfig, parse_synthetic_weights, resume_overrides, split_columns
from .data import Table, fit_splits, load_data, load_table
from .data.synthetic import K0, effective_sizes, join, synthetic_for_fit
from .errors import ExaptError
from .forgetting import Forgetting, forgetting_lines, forgetting_metrics
from .mlm_source import load_mlm_source
from .penalties import Context, PenaltySet, parse_penalties
from .rare_classes import class_metrics, fit_decision, prepare_classes, summary_line
from .run import Run, build_model, write_outputs
from .run_folder import RunFolder
from .source import check_init_base, init_model_name, load_init, load_source_data
from .strategies import model_for, parse_strategy
from .tasks import Task
from .threads import configure_threads
from .train.features import FeatureCache, encode
from .train.loop import Split, predict_logits, prefix_split, train
from .train.privacy import check_private, privacy_line, private_probe

# fit()'s flat names for the options of the source and adapt sections
_SECTION_OPTIONS = {"source_data": ("source", "data"), "source_text": ("source", "text"),
                    "source_label": ("source", "label"), "source_features": ("source", "features"),
                    "source_corpus": ("source", "corpus"), "source_max_test": ("source", "max_test"),
                    "adapt_to": ("adapt", "data"), "target_labels": ("adapt", "labels"), "select": ("adapt", "select"),
                    "target_test_fraction": ("adapt", "test_fraction")}


def fit(data: str = "tweets", strategy: str = "linear-probe", model: str | None = None, *,
        out: str | Path | None = None, overwrite: bool = False, progress: bool = True, log=print, **options) -> Run:
    """Fit one strategy on one data set and return the `Run` (also saved under `out`).

    `options` are the fields of `FitConfig` and of its data and train sections, by name
    (text, label, features, task, test, n_per_class, seed, val_fraction, test_fraction,
    max_test, pooling, max_length, epochs, lr, batch_size, patience, init, penalties, and
    any train field such as head_lr), with their defaults there; the source and adapt
    sections by flat names (source_data, source_text, source_label, source_features,
    source_corpus, source_max_test; adapt_to, target_labels, select, target_test_fraction).
    `model` defaults to minilm-l6, or to the model of the `init` run this fit starts from;
    `penalties` are specs such as "l2sp:1" or "ewc:1e4" (see exapt.penalties).

    >>> run = exapt.fit("tweets", strategy="lp-ft", n_per_class=16)   # doctest: +SKIP
    >>> run.evaluate("test.csv"); run.predict("new.csv")               # doctest: +SKIP
    >>> exapt.fit("tweets-self-driving", "full", init="runs/airline", penalties=["ewc"])  # doctest: +SKIP
    >>> exapt.fit("mnist-8x8", "full", "mlp", adapt_to="optdigits", penalties=["dann"])  # doctest: +SKIP
    """
    sections: dict[str, dict] = {"source": {}, "adapt": {}}
    for flat, (section, name) in _SECTION_OPTIONS.items():
        if flat in options:
            value = options.pop(flat)
            if name in ("text", "features"):
                value = split_columns(value, always_list=name == "features")
            sections[section][name] = str(value) if flat == "adapt_to" and value else value
    cfg = FitConfig.from_options(data, strategy=strategy, model=model, **sections, **options)
    return fit_config(cfg, out=out, overwrite=overwrite, progress=progress, log=log)


def resume(run_dir, progress: bool = True, log=print, overrides=()) -> Run:
    """Continue an interrupted fit from its last checkpoint (same result as no interruption).

    `overrides` (`train.lr=1e-5`, ...) change the optimiser's settings from the last
    checkpoint on, e.g. after training diverged; see `resume_overrides`."""
    folder = RunFolder(run_dir)
    if not folder.is_run():
        raise ExaptError(f"--resume {folder.path}: no {folder.CONFIG} there, so nothing to resume")
    cfg = folder.read_config()
    resume_overrides(cfg, overrides)  # checked even for a complete run: a wrong --set is said
    if folder.is_complete():
        log(f"{folder.path} is already complete")
        return Run.load(folder.path)
    return fit_config(cfg, out=folder.path, resume=True, progress=progress, log=log)


def _prepare_out(out, cfg: FitConfig, resume: bool, overwrite: bool) -> RunFolder:
    folder = RunFolder(out) if out else RunFolder.default_for(cfg)
    if not resume:
        folder.check_fresh_fit(overwrite)
    return folder


@dataclass
class _Prepared:
    """Everything checked and built before the run folder exists."""
    task: Task
    tables: dict  # train / val / test Tables
    targets: dict  # train / val / test target tensors
    model: object
    penalties: PenaltySet = None
    context: Context = None  # what penalties see; also the source side (init run, source data)
    init: object = None      # InitRun or None
    target: object = None    # TargetDomain of --adapt-to (adapt/target.py) or None
    names: Table = None      # the strategy's extra probe examples (class names, names=R), or None
    class_counts: list = None  # the data's class counts outside test, for a decision rule (rare_classes.py)
    synthetic: object = None   # the --synthetic rows that may train this fit (data/synthetic.py) or None
    loss_weights: object = None  # the training rows' loss weights (ALPHA for synthetic rows) or None
    privacy: object = None     # --privacy's PrivacySpec (config.py) or None


def resolve_defaults(cfg: FitConfig, init=None, reserve: int = 0) -> None:
    """--model, --pooling and --max-length of a fit that starts from a run default to that
    run's: its head was trained on those features; otherwise --max-length is the model's
    own (its family says; `reserve`: positions the strategy's own tokens take), recorded
    resolved. (compare resolves them once for all its cells.)"""
    cfg.model = init_model_name(cfg, init)
    if init is not None and cfg.pooling is None:
        cfg.pooling = init.config.pooling
    if cfg.max_length is None:
        cfg.max_length = (init.config.max_length if init is not None else None) or model_max_length(cfg.model, reserve)


def _prepare(cfg: FitConfig, strategy, loader=load_data, penalties: PenaltySet | None = None) -> _Prepared:
    """Load and check data, labels, model, the source side and options: every user error
    surfaces here. `cfg` gets its defaults resolved (model, pooling) in place.

    `loader` is `load_data` or a memo of it (`compare` reads each file once for all cells)."""
    init = load_init(cfg.init) if cfg.init else None
    resolve_defaults(cfg, init, strategy.reserved_positions)
    cfg.model = model_for(strategy, cfg.model)  # after: the length is the named model's (a baseline ignores it)
    if init is not None and not strategy.uses_pretrained:
        raise ExaptError(f"--init with --strategy {cfg.strategy}: that strategy starts from random weights")
    table = load_table(cfg.data, loader)
    task = Task.from_labels(cfg.task, table.labels, table.source)
    tables = dict(zip(("train", "val", "test"), fit_splits(cfg.data, table, task.kind, loader)))
    task = Task.from_labels(task.kind, tables["train"].labels, f"{table.source} (training split)")
    strategy.check_task(task.kind, cfg.strategy)
    names = strategy.extra_probe_examples(tables["train"], task.classes, cfg.strategy)
    targets = {name: task.encode(t.labels, t.rows, t.source) for name, t in tables.items()}
    class_counts = prepare_classes(cfg, task, table, tables, targets)
    synthetic = synthetic_for_fit(cfg.data, task.kind, task.classes, tables)
    start = {**init.state, **init.head} if init is not None else None
    model = build_model(cfg, task, input_size(table), strategy, init.task if init else None, start)
    bb = model.backbone
    check_input_kind(bb, table.kind, cfg.model)
    strategy.check_backbone(bb, cfg.strategy, cfg.model)  # (new modules checked theirs when injected)
    if init is not None:
        check_init_base(init, model)
    elif hasattr(bb, "fit_input_stats"):  # a run started from another keeps its input statistics
        bb.fit_input_stats(tables["train"].inputs)
    penalties = penalties if penalties is not None else parse_penalties(cfg.penalties)
    target = load_target(cfg, table, task.classes, loader)
    if target is not None:
        check_selection(target, task, tables["val"])
    context = Context(model, strategy, task, cfg, source=load_source_data(cfg, init, loader),
                      mlm=load_mlm_source(cfg, model), has_init=init is not None, target=target)
    penalties.check(context)
    return _Prepared(task, tables, targets, model, penalties, context, init, target, names, class_counts, synthetic)


def fit_config(cfg: FitConfig, out=None, resume: bool = False, overwrite: bool = False,
               progress: bool = True, log=print, loader=load_data) -> Run:
    cfg.validate()  # every field against the rule declared with it (config.py, checks.py)
    strategy = parse_strategy(cfg.strategy)
    penalties = parse_penalties(cfg.penalties)
    if penalties and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise ExaptError("--penalty runs in a single process for now; launch without torchrun / accelerate")
    privacy = check_private(cfg, strategy, penalties)
    if privacy is not None and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise ExaptError("--privacy runs in a single process; launch without torchrun / accelerate")
    configure_threads()
    folder, main = _agree_on_out(out, cfg, resume, overwrite)  # a path that can never be a run fails first
    prep = _prepare(cfg, strategy, loader, penalties)
    prep.privacy = privacy
    path = folder.path
    if main:
        folder.begin(cfg, _labels_json(prep), overwrite=overwrite and not resume, resume=resume)
    else:
        log = _silent  # under torchrun / accelerate launch, rank 0 alone writes and talks
    sizes = {name: len(t) for name, t in prep.tables.items()}
    log(f"{strategy.spec()} on {prep.model.backbone.describe()}: train {sizes['train']}, val {sizes['val']}, "
        f"test {sizes['test']} ({prep.task.kind})")
    if prep.init is not None or penalties:
        given = ", ".join(p.spec() for p in penalties) or "none"
        log(f"started from {prep.init.path if prep.init else cfg.model}; penalties: {given}")

    started = time.perf_counter()
    run = _run_synthetic if prep.synthetic is not None else _run_strategy
    test_logits, result = run(cfg, strategy, prep, folder, resume, progress and main, log, main)
    # a resumed run adds the training time of the processes before it (kept in the checkpoint)
    seconds = time.perf_counter() - started + result.get("earlier_seconds", 0.0)
    metrics = _metrics(prep, strategy, test_logits, result, seconds)
    if main:
        strategy.export(prep.model, folder.adapter)
        if result["decision"] is not None:
            folder.write_decision(result["decision"].to_json())
        write_outputs(folder, prep.model, set(result["trainable"]), metrics, result["history"])
    log(f"trained {metrics['trainable_parameters']:,} of {metrics['total_parameters']:,} parameters "
        f"({metrics['trainable_fraction']:.2%}) in {metrics['train_seconds']:.1f} s")
    log(f"test: {', '.join(f'{k} {v:.4f}' for k, v in metrics['test'].items())}  ->  {path}")
    if "target_test" in metrics:
        log(f"target test ({cfg.adapt.data}, {metrics['n_target_test']} rows): "
            f"{', '.join(f'{k} {v:.4f}' for k, v in metrics['target_test'].items())}; "
            f"model selection: {metrics['model_selection']['described']}")
    for line in [summary_line(metrics), *forgetting_lines(metrics), privacy_line(metrics)]:
        if line:
            log(line)
    prep.model.eval()
    return Run(path, cfg, prep.task, prep.model, result["decision"])


def _labels_json(prep: _Prepared) -> dict:
    """The task's label encoding (+ the source head's, for a run started from another)."""
    out = prep.task.to_json()
    if prep.init is not None:
        out["source"] = {**prep.init.task.to_json(), "run": str(prep.init.path), "weights_sha256": prep.init.sha256}
    return out


def _too_long(bb, tables: dict, items: dict, log) -> dict:
    """Inputs longer than the backbone's window, per split (truncated, or chunked with
    --long), said in one line for a token model."""
    counts = {name: bb.n_too_long(tables[name].inputs, items[name]) for name in items}
    if bb.input_kind == "text":
        what = f"read in overlapping windows (--long {bb.long_spec})" if bb.long is not None else "truncated"
        hint = " (--long chunk reads them whole)" if bb.long is None and any(counts.values()) else ""
        log(f"inputs longer than {bb.max_length} tokens, {what}: "
            f"{', '.join(f'{n} {c}' for n, c in counts.items())}{hint}")
    return counts


def _run_strategy(cfg, strategy, prep: _Prepared, folder: RunFolder, resume, progress, log, main=True
                  ) -> tuple[torch.Tensor, dict]:
    """Probe and/or gradient training; returns test logits and what training reports."""
    model, bb = prep.model, prep.model.backbone
    splits = {name: Split.prepare(bb, t.inputs, prep.targets[name]) for name, t in prep.tables.items()}
    splits["train"].loss_weights = prep.loss_weights  # synthetic rows weigh ALPHA (docs/augment.md)
    items = {name: split.items for name, split in splits.items()}
    result = {"history": [], "ever_trainable": [], "best_epoch": 0, "epochs": 0,
              "too_long": _too_long(bb, prep.tables, items, log)}
    test_features = None
    forgetting = Forgetting(prep.context)
    result["source_before"] = forgetting.scores(model)  # before anything changes the encoder
    stage = strategy.before_training(model, items["train"], prep.targets["train"].numpy(),
                                     strategy.learning_rates(cfg.train)[0], cfg.train.seed, progress=progress, log=log)
    if stage:  # e.g. lp-ft:pairs=N's contrastive stage
        result["contrastive"] = stage
    if strategy.fits_probe:
        result["probe"], test_features = _fit_probe(strategy, prep, items, progress)
    target = target_splits(bb, prep.task, prep.target) if prep.target is not None else {}
    prep.context.start_features = StartFeatures(model)
    if prep.target is not None:  # which validation chooses the epoch: said in metrics.json
        result["selection"] = _choose_validation(strategy, prep, splits, target, cfg.data.seed)
    if strategy.trains_encoder:
        if main:  # where training starts from, for `exapt interpolate` (the rest is rebuilt from config)
            folder.write_start({n: p for n, p in model.named_parameters() if n.startswith("head.")})
        result.update(_train_encoder(cfg, strategy, prep, splits, target, folder, resume, progress, log))
        test_logits = predict_logits(model, splits["test"])
        result["source_after"] = forgetting.scores(model)
    else:
        with torch.no_grad():
            test_logits = model.head(test_features)
        result["source_after"] = result["source_before"]  # the encoder did not change
    result["decision"] = fit_decision(cfg, prep.task, model, splits["val"], prep.targets["train"], prep.class_counts)
    if "test" in target:
        result["target_test"] = prep.task.metrics(predict_logits(model, target["test"]), target["test"].targets)
    result["trainable"] = sorted(set(result["ever_trainable"]) | set(model.head_parameter_names()))
    return test_logits, result


def _train_encoder(cfg, strategy, prep: _Prepared, splits: dict, target: dict, folder: RunFolder, resume: bool,
                   progress: bool, log) -> dict:
    """The gradient loop, with the penalties set up, the frozen prefix computed once, and
    the strategy's after-training step (WiSE-FT's weight mix); returns what the loop reports."""
    model, bb, ctx = prep.model, prep.model.backbone, prep.context
    ctx.train, ctx.run_dir, ctx.progress, ctx.log = splits["train"], folder.path, progress, log
    ctx.unlabelled = target.get("unlabelled")
    prep.penalties.setup(ctx)
    k = strategy.cacheable_prefix(model) if (cfg.train.cache_prefix and bb.supports_prefix) else 0
    train_splits = {n: prefix_split(bb, splits[n], k) for n in ("train", "val")} if k else splits
    if k and ctx.unlabelled is not None:  # target batches meet the model the way source batches do
        ctx.unlabelled = prefix_split(bb, ctx.unlabelled, k)
    model.prefix_k = k
    start = {n: t.detach().clone() for n, t in model.state_dict().items()} if strategy.needs_start_weights else None
    try:
        val = train_splits["val"] if len(train_splits["val"].items) else None
        report = train(model, strategy, prep.task, train_splits["train"], val, cfg.train, folder.path,
                       resume=resume, progress=progress, log=log, penalties=prep.penalties, privacy=prep.privacy)
    finally:
        model.prefix_k = 0
    if start is not None:
        strategy.after_training(model, start)
    return report


def _run_synthetic(cfg, strategy, prep: _Prepared, folder: RunFolder, resume, progress, log, main=True
                   ) -> tuple[torch.Tensor, dict]:
    """--synthetic: one run per ALPHA of --synthetic-weight, each from the same start (ALPHA 0:
    the real rows alone); the best on validation (real rows only; a tie goes to the smaller
    ALPHA) is kept. Returns its test logits and report, with the `synthetic` record."""
    alphas = parse_synthetic_weights(cfg.data.synthetic_weight)
    real = prep.tables["train"]
    pristine = copy.deepcopy(prep.model) if len(alphas) > 1 else None
    val = Split.prepare(prep.model.backbone, prep.tables["val"].inputs, prep.targets["val"])
    best, scores = None, {}
    for alpha in alphas:
        if pristine is not None:
            prep.model = prep.context.model = copy.deepcopy(pristine)
        prep.tables["train"], prep.loss_weights = join(real, prep.synthetic, alpha)
        prep.targets["train"] = prep.task.encode(prep.tables["train"].labels)
        if len(alphas) > 1:
            log(f"--synthetic-weight {alpha:g}: {len(prep.tables['train'])} training rows")
        test_logits, result = _run_strategy(cfg, strategy, prep, folder, resume and pristine is None, progress, log,
                                            main)
        if len(val.items):
            logits = predict_logits(prep.model, val)
            scores[alpha] = {**prep.task.metrics(logits, val.targets), "loss": float(prep.task.loss(logits, val.targets))}
            sign = 1 if prep.task.higher_is_better else -1
            key = (sign * scores[alpha][prep.task.primary_metric], -scores[alpha]["loss"])
        else:
            key = (0.0,)
        if best is None or key > best[0]:
            best = (key, alpha, prep.model, test_logits, result, prep.loss_weights)
    _, alpha, prep.model, test_logits, result, prep.loss_weights = best
    prep.context.model = prep.model
    prep.tables["train"], prep.targets["train"] = real, prep.task.encode(real.labels)
    result["synthetic"] = {
        "file": prep.synthetic.path, "weight": alpha, "weights_tried": alphas,
        "chosen_on": "validation" if len(alphas) > 1 else "given", "k0": K0,
        "n_real": len(real), "n_synth": len(prep.synthetic.table), "n_synth_read": prep.synthetic.n_read,
        "n_synth_dropped": prep.synthetic.dropped, "val": {f"{a:g}": s for a, s in scores.items()},
        "per_class": effective_sizes(prep.task.classes, real.labels, prep.synthetic, alpha)}
    log(f"synthetic rows: {len(prep.synthetic.table)} at ALPHA {alpha:g}"
        + (f" (chosen on validation from {', '.join(f'{a:g}' for a in alphas)})" if len(alphas) > 1 else ""))
    return test_logits, result


def _choose_validation(strategy, prep: _Prepared, splits: dict, target: dict, seed: int) -> dict:
    """With --adapt-to: the validation split that picks the epoch (replaced in `splits`),
    and its record for metrics.json."""
    choice = prep.target.selection if strategy.trains_encoder else "none"
    info = None
    if choice == "target-labels":
        splits["val"] = target["val"]
    elif choice == "weighted-val":
        splits["val"], info = weighted_validation(prep.context.start_features, splits["train"], splits["val"],
                                                  target["unlabelled"], seed)
    return selection_record(choice, len(splits["val"].items) if choice != "none" else 0, info)


def _fit_probe(strategy, prep: _Prepared, items: dict, progress: bool) -> tuple[dict, torch.Tensor]:
    """The head fitted on frozen features of the training split (+ the strategy's extra
    examples); returns what the probe reports and the test split's features."""
    bb = prep.model.backbone
    parts = {n: (prep.tables[n], items[n]) for n in ("train", "test")}
    probe_targets = prep.targets["train"]
    if prep.names is not None:
        parts["names"] = (prep.names, bb.prepare_inputs(prep.names.inputs))
        probe_targets = torch.cat([probe_targets, prep.task.encode(prep.names.labels)])
    # the cache holds the untuned encoder's features: not for a run tuned first or started from a run
    feats = _features(bb, parts, progress, cached=prep.init is None and strategy.probe_features_cacheable)
    probe_features = torch.cat([feats["train"], feats["names"]]) if prep.names is not None else feats["train"]
    weights = prep.loss_weights
    if weights is not None and prep.names is not None:
        weights = torch.cat([weights, torch.ones(len(prep.names))])
    if prep.privacy is not None:  # DP-SGD on the cached features instead of L-BFGS (train/privacy.py)
        cfg = prep.context.cfg
        probe = private_probe(prep.model.head, probe_features, probe_targets, prep.task, prep.privacy, cfg.train,
                              strategy.probe_C, cfg.train.seed)
    else:  # weights passed only when there are some, so a strategy's own fit_probe without the keyword still serves
        probe = strategy.fit_probe(prep.model.head, probe_features, probe_targets, prep.task,
                                   **({"sample_weight": weights} if weights is not None else {}))
    return probe, feats["test"]


def _metrics(prep: _Prepared, strategy, test_logits, result: dict, seconds: float) -> dict:
    model, trainable = prep.model, set(result["trainable"])
    metrics = {
        "test": prep.task.metrics(test_logits, prep.targets["test"], result["decision"]),
        **{f"n_{name}": len(t) for name, t in prep.tables.items()},
        "strategy": strategy.spec(), "model": model.backbone.identity()["model"],
        "trainable_parameters": sum(p.numel() for n, p in model.named_parameters() if n in trainable),
        "total_parameters": sum(p.numel() for p in model.parameters()),
        "train_seconds": round(seconds, 2), "epochs_run": len(result["history"]),
        "best_epoch": result["best_epoch"], **result.get("probe", {}), **result.get("contrastive", {}),
        "n_truncated": {n: 0 if model.backbone.long is not None else c for n, c in result["too_long"].items()},
    }
    if model.backbone.long is not None:
        metrics["n_chunked"] = result["too_long"]
    for key in ("privacy", "stopped_by_time_limit_after_epoch"):
        if key in result:
            metrics[key] = result[key]
    metrics["trainable_fraction"] = metrics["trainable_parameters"] / metrics["total_parameters"]
    metrics.update(class_metrics(prep.task, result["decision"], test_logits, prep.targets["test"]))
    if prep.names is not None:
        metrics["n_class_name_examples"] = len(prep.names)
    if "synthetic" in result:
        metrics["synthetic"] = result["synthetic"]
    metrics.update(forgetting_metrics(prep.context, prep.init, prep.penalties, result))
    if prep.target is not None:
        metrics["adapt_to"] = prep.context.cfg.adapt.data
        metrics["n_target_unlabelled"] = len(prep.target.unlabelled)
        metrics["model_selection"] = result["selection"]
        if "target_test" in result:
            metrics["target_test"] = result["target_test"]
            metrics["n_target_test"] = len(prep.target.test)
    history = result["history"]
    if history and "val_loss" in history[-1]:
        best = history[result["best_epoch"] - 1]
        metrics["val"] = {k[4:]: v for k, v in best.items() if k.startswith("val_")}
    return metrics


def _agree_on_out(out, cfg: FitConfig, resume: bool, overwrite: bool) -> tuple[RunFolder, bool]:
    """Rank 0 checks and picks the run folder; under torchrun / accelerate launch the other
    ranks receive its decision (or its error), so no rank races another to the folder."""
    from accelerate import PartialState  # heavy: imported on first use
    from accelerate.utils import broadcast_object_list  # heavy: imported on first use

    state = PartialState(cpu=not torch.cuda.is_available())
    decision = [None]
    if state.is_main_process:
        try:
            decision = [str(_prepare_out(out, cfg, resume, overwrite).path)]
        except ExaptError as e:
            decision = ["!" + str(e)]
    if state.num_processes > 1:
        broadcast_object_list(decision)
    if decision[0].startswith("!"):
        raise ExaptError(decision[0][1:])
    return RunFolder(decision[0]), state.is_main_process


def _silent(*_args, **_kwargs) -> None:
    pass


def _features(bb, parts: dict, progress: bool, cached: bool = True) -> dict[str, torch.Tensor]:
    """Frozen features; cached on disk by the base model's identity, so not for a model
    started from a run (--init): its weights are not the base model's."""
    if cached and bb.input_kind in ("text", "image"):  # image items are keyed by their pixels
        cache = FeatureCache(bb)
        return {name: cache.features(t.inputs, prepared, progress=progress) for name, (t, prepared) in parts.items()}
    return {name: encode(bb, prepared, progress=False) for name, (t, prepared) in parts.items()}
