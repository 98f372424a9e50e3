"""`exapt rank`: choose the source model and layer before fine-tuning.

    from exapt.select.rank import rank
    table = rank("tweets.csv", ["minilm-l6", "scratch:minilm-l6"], layers="all", test="test.csv")
    table = rank("tweets.csv", "minilm-l6@3,minilm-l6,runs/sst2-full", scores="logme,leep,nce")
    table = rank(..., validate=True, strategy="lp-ft", out="rank")   # also fine-tune each one
    pd.DataFrame(table.attrs["tau"])                                # score vs. accuracy reached

A candidate is

- ``MODEL``: an alias (``minilm-l6``), a Hugging Face model folder, or ``scratch:NAME``;
- ``MODEL@K``: the first K transformer layers of MODEL, features = the hidden state
  after layer K, pooled exactly as MODEL pools its last layer (the backbone's own
  pooling / normalisation, `exapt.backbones.pool`); ``layers="all"`` or ``"1,3,6"``
  turns every candidate without an ``@`` into one candidate per layer;
- ``baseline`` (a strategy with features of its own): the classical features (TF-IDF,
  k-mers, residue composition, raw values) fitted on the scored examples, scored like any
  candidate, and with ``validate`` fitted by that strategy (C by cross-validation);
- a run folder of an earlier ``exapt fit`` (metrics.json + config.yaml): that run's
  encoder. If the run has a classification head, its softmax outputs on the target
  inputs give LEEP and NCE (source classes = the run's classes); so does a Hugging
  Face ``...ForSequenceClassification`` checkpoint folder.

All layers of one model come from ONE forward pass (``output_hidden_states``) and are
cached on disk under ``$EXAPT_CACHE/rank/<model key>/`` per example (keyed by a hash
of the text, like `exapt.train.features`), so ranking again, on a subset, or other
layers of the same model encodes nothing. The scored examples are exactly the
training examples `exapt.fit` would train on with the same data options (the same
`fit._splits`), so ``validate=True`` fine-tunes every candidate on them, measures test
accuracy on the held-out split, and reports the weighted Kendall tau between each
score and that accuracy. ``MODEL@K`` is fine-tuned as a truncated copy of the model
folder (`layer_cache.truncated_model_folder`); a run as a folder of its encoder's weights.

The pieces: `candidates` (what --models names), `layer_cache` (features of every layer,
cached; truncated copies), `scores` (the formulas), `rank_validate` (fine-tuning each
candidate, the taus), `rank_report` (the files written).
"""
from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ..backbones import input_size, load_backbone, model_packages
from ..config import FitConfig, LongInputs
from ..data import fit_splits, load_data
from ..errors import ExaptError
from ..executors import parse_executor
from ..files import atomic_write_bytes
from ..strategies import parse_strategy
from ..tasks import Task
from ..threads import configure_threads
from ..train.features import encode
from .candidates import Candidate, parse_candidates, parse_list
from .layer_cache import LayerCache
from .rank_report import META, OUTPUT_FILES, write_outputs
from .rank_validate import FINETUNE_DIR, tau_table, validate_candidates
from .scores import FEATURE_SCORE_TASKS, SCORES, SOURCE_SCORE_TASKS, SOURCE_SCORES
from .suggest import suggest

DEFAULT_SCORES = ("logme", "h-score", "knn", "linear-probe-cv")
ALL_SCORES = tuple(SCORES) + tuple(SOURCE_SCORES)
SCORE_TASKS = {**FEATURE_SCORE_TASKS, **SOURCE_SCORE_TASKS}


def parse_scores(scores) -> list[str]:
    if scores is None:
        return list(DEFAULT_SCORES)
    items = parse_list(scores, "--scores")
    if [s.lower() for s in items] == ["all"]:
        return list(ALL_SCORES)
    if not items:
        raise ExaptError("--scores: name at least one score")
    bad = [s for s in items if s not in ALL_SCORES]
    if bad:
        raise ExaptError(f"--scores: unknown score {bad[0]!r}; known: {', '.join(ALL_SCORES)} (or all)")
    return list(dict.fromkeys(items))



def _quiet(*_a, **_k) -> None:
    pass


def _ranks(values: pd.Series) -> pd.Series:
    return values.rank(ascending=False, method="min").astype("Int64")


def _settings(data, test, text, label, task, n_per_class, seed, val_fraction, test_fraction, max_test,
              max_length, strategy, epochs, batch_size) -> dict:
    return {"data": str(data), "test": None if test is None else str(test), "text": text, "label": label,
            "task": task, "n_per_class": n_per_class, "seed": seed, "val_fraction": val_fraction,
            "test_fraction": test_fraction, "max_test": max_test, "max_length": max_length,
            "strategy": strategy, "epochs": epochs, "batch_size": batch_size}


DATA_SETTINGS = ("data", "test", "text", "label", "task", "n_per_class", "seed", "val_fraction", "test_fraction",
                 "max_test", "max_length")


def _check_out(out: Path, settings: dict, overwrite: bool) -> bool:
    """A folder rank may write to: new, empty, or an earlier rank output of the same data
    (any other earlier rank output only with --overwrite, which also drops its fine-tuning
    results; without it, results of the same settings are reused). True: clear it first."""
    if not out.exists():
        return False
    if not out.is_dir():
        raise ExaptError(f"--out {out} is a file, not a folder")
    if not any(out.iterdir()):
        return False
    meta = out / META
    try:
        old = json.loads(meta.read_text()) if meta.exists() else None
    except (OSError, ValueError):
        old = None
    if not isinstance(old, dict) or "exapt_rank" not in old:
        raise ExaptError(f"--out {out} is a non-empty folder that is not an earlier `exapt rank` output; "
                         "choose another")
    before = old.get("settings") or {}
    changed = [k for k in DATA_SETTINGS if before.get(k) != settings.get(k)]
    if changed and not overwrite:
        raise ExaptError(f"--out {out} holds a rank of other data or options ({', '.join(changed)}); "
                         "pass --overwrite to replace it or choose another --out")
    return overwrite


def _clear_out(out: Path) -> None:
    for name in OUTPUT_FILES:
        (out / name).unlink(missing_ok=True)
    shutil.rmtree(out / FINETUNE_DIR, ignore_errors=True)


@dataclass
class _Data:
    train: object                  # the Table that is scored (= fit's training split)
    test: object
    task: object
    y: np.ndarray
    n_val: int = 0


def _load_split(settings: dict, batch_size: int, epochs, input_kind: str = "text") -> _Data:
    s = settings
    cfg = FitConfig.from_options(s["data"], text=s["text"], label=s["label"], test=s["test"],
                                 test_fraction=s["test_fraction"], max_test=s["max_test"],
                                 val_fraction=s["val_fraction"], n_per_class=s["n_per_class"], seed=s["seed"],
                                 task=s["task"], max_length=s["max_length"], epochs=epochs, batch_size=batch_size)
    cfg.validate()
    table = load_data(cfg.data.source, text=cfg.data.text, label=cfg.data.label)
    if input_kind is not None and table.kind != input_kind:
        has = {"features": "numeric features", "image": "images", "text": "texts"}.get(table.kind, table.kind)
        wants = "image models (efficientnet-lite0)" if input_kind == "image" else "text encoders"
        raise ExaptError(f"{table.source}: the candidates are {wants}, but this data has {has}")
    task = Task.from_labels(cfg.task, table.labels, table.source)
    train, val, test = fit_splits(cfg.data, table, task.kind)
    task = Task.from_labels(task.kind, train.labels, f"{table.source} (training split)")
    y = task.encode(train.labels, train.rows, train.source).numpy()
    return _Data(train, test, task, y, len(val))


def _input_kind(candidates: list[Candidate], validate: bool) -> str | None:
    """"text" or "image": what every candidate reads (a mix is refused); None when only
    classical candidates are ranked (they read any kind)."""
    kinds = {c.source.input_kind for c in candidates} - {None}
    if len(kinds) > 1:
        images = ", ".join(c.name for c in candidates if c.source.image)
        raise ExaptError(f"--models mixes image models ({images}) with text encoders; rank one kind at a time")
    cut = [c.name for c in candidates if c.source.image and c.truncated]
    if validate and cut:
        raise ExaptError(f"--validate fine-tunes whole image models only; {', '.join(cut[:3])} "
                         f"{'is' if len(cut) == 1 else 'are'} a block's features (scored, not fine-tuned): "
                         "drop --validate, or rank the whole models")
    return kinds.pop() if kinds else None


def _check_scores(scores: list[str], kind: str, explicit: bool, candidates: list[Candidate], log) -> list[str]:
    keep = []
    for s in scores:
        if kind not in SCORE_TASKS[s]:
            if explicit:
                raise ExaptError(f"--scores {s}: does not support a {kind} task (it supports: "
                                 f"{', '.join(SCORE_TASKS[s])}); LogME supports every task")
            log(f"  ({s} skipped: it does not support a {kind} task)")
            continue
        keep.append(s)
    source = [s for s in keep if s in SOURCE_SCORES]
    if source and not any(c.has_head for c in candidates):
        names = ", ".join(c.name for c in candidates[:5]) + (", ..." if len(candidates) > 5 else "")
        raise ExaptError(f"--scores {','.join(source)}: none of the candidates ({names}) has a source classifier; "
                         "LEEP and NCE need a run folder of a classification fit or a ...ForSequenceClassification "
                         "checkpoint (at its last layer)")
    if not keep:
        raise ExaptError(f"--scores: none of {', '.join(scores)} supports a {kind} task; use logme")
    return keep


def rank(data, models, layers=None, scores=DEFAULT_SCORES, n_per_class: int | None = None, seed: int = 0,
         validate: bool = False, strategy: str = "linear-probe", out: str | Path | None = None, *,
         text=None, label: str = "label", task: str = "auto", test: str | None = None,
         val_fraction: float = 0.0, test_fraction: float = 0.2, max_test: int = 2000, max_length: int = 128,
         epochs: int | None = None, batch_size: int = 16, overwrite: bool = False, progress: bool = True,
         log=print, long: str | None = None, executor: str | None = None) -> pd.DataFrame:
    """Score every candidate's frozen features on the training examples; optionally fine-tune each.

    Returns one row per candidate: each score and its rank (1 = best), the seconds spent
    scoring it, and with ``validate`` the test metric fine-tuning reached and its seconds.
    ``.attrs`` holds ``tau`` (with ``validate``: one record per score, the weighted Kendall
    tau against the test metric and the candidate it picks; ``pd.DataFrame(attrs["tau"])``),
    ``meta`` (settings, timings) and ``files`` (what was written to ``out``).
    Data options mean what they mean for `exapt.fit`; ``val_fraction`` defaults to 0 here,
    so every labelled training example is scored and the fine-tuning runs its full schedule.
    ``executor``: where the ``validate`` fine-tunings run, "local" or "ray[:ADDRESS][,...]"
    (exapt.executors, docs/scale.md).
    """
    log = log or _quiet
    started = time.perf_counter()
    if isinstance(text, str) and "," in text:
        text = [c.strip() for c in text.split(",") if c.strip()]
    settings = _settings(data, test, text, label, task, n_per_class, seed, val_fraction, test_fraction, max_test,
                         max_length, strategy, epochs, batch_size)
    if long is not None:  # only when set: a rank folder made before keeps its settings
        LongInputs.parse(long)  # a bad spec is said before any work
        settings["long"] = long
    runner = parse_executor(executor)
    try:
        job = _prepare(settings, models, layers, scores, validate, out, overwrite, log, runner)
        return _rank(job, settings, validate, strategy, started, progress, log)
    finally:
        runner.close()


def _rank(job, settings: dict, validate: bool, strategy: str, started: float, progress: bool, log) -> pd.DataFrame:
    texts = list(job.data.train.inputs)
    log(f"rank {len(job.candidates)} candidate(s) on {len(texts)} training examples of {job.data.train.source} "
        f"({job.data.task.kind}): {', '.join(job.scores)}")
    frame, feature_seconds = _score_all(job, texts, progress, log)
    rank_seconds = time.perf_counter() - started
    tau, finetune_total = _validate_into(frame, job, log) if validate else (None, 0.0)
    metric = job.data.task.primary_metric
    frame = frame[_columns(job.scores, metric, validate)]
    meta = _meta(job, frame, rank_seconds, feature_seconds)
    if validate:
        meta.update(finetune_seconds=round(finetune_total, 2), strategy=strategy,
                    rank_to_finetune_ratio=round(rank_seconds / finetune_total, 5) if finetune_total > 0 else None)
    frame.attrs["meta"] = meta
    # plain records, not a DataFrame: pandas compares attrs (pd.concat), and a DataFrame has no truth value
    frame.attrs["tau"] = None if tau is None else tau.to_dict("records")
    frame.attrs["files"] = {}
    if validate:
        r = meta["rank_to_finetune_ratio"]
        log(f"ranking took {rank_seconds:.1f} s, fine-tuning {finetune_total:.1f} s"
            + (f" (ranking = {r:.1%} of fine-tuning)" if r is not None else ""))
    if job.out is not None:
        frame.attrs["files"] = write_outputs(job.out, frame, tau, meta)
    return frame


@dataclass
class _Job:
    """A checked rank request: what is scored, with which scores, on which examples, written where."""
    settings: dict
    candidates: list[Candidate]
    scores: list[str]
    data: _Data
    out: Path | None
    executor: object = None   # where --validate's fine-tunings run (exapt.executors), started


def _prepare(settings: dict, models, layers, scores, validate: bool, out, overwrite: bool, log, runner) -> _Job:
    """Check every option and load the data before anything is written; then claim `out`."""
    listed = tuple(parse_list(scores, "--scores")) if scores is not None else DEFAULT_SCORES
    explicit_scores = listed != DEFAULT_SCORES and [x.lower() for x in listed] != ["all"]
    score_names = parse_scores(scores)
    if validate:
        parse_strategy(settings["strategy"])
    candidates = parse_candidates(models, layers)
    input_kind = _input_kind(candidates, validate)
    if validate and len(candidates) < 2:
        raise ExaptError("--validate needs at least 2 candidates to correlate scores with accuracy")
    out = Path(out) if out is not None else None
    clear = out is not None and _check_out(out, settings, overwrite)
    configure_threads()
    d = _load_split(settings, settings["batch_size"], settings["epochs"], input_kind)
    score_names = _check_scores(score_names, d.task.kind, explicit_scores, candidates, log)
    if validate:   # a cluster that cannot run the fine-tunings is said before the folder is touched
        runner.start(packages=("exapt", *{p for c in candidates for p in model_packages(c.source.spec)}))
    if clear:   # every user error is behind us: only now replace an earlier output
        _clear_out(out)
    if out is not None and not (out / META).exists():
        # mark the folder as ours before any fine-tuning, so an interrupted --validate can resume in it
        atomic_write_bytes(out / META, json.dumps({"exapt_rank": 1, "settings": settings, "complete": False}).encode())
    return _Job(settings, candidates, score_names, d, out, runner)


def _score_all(job: _Job, texts: list, progress: bool, log) -> tuple[pd.DataFrame, dict]:
    """Every candidate's scores (one row each, with ranks) and the seconds spent encoding per source:
    one forward pass per source model serves all its layers, cached."""
    rows, feature_seconds = [], {}
    by_source: dict[int, list[Candidate]] = {}
    for c in job.candidates:
        by_source.setdefault(id(c.source), []).append(c)
    for group in by_source.values():
        src = group[0].source
        t0 = time.perf_counter()
        if src.classical:
            feats, hits = _classical_features(src, job.data.train), 0
        else:
            cache = LayerCache(src, job.settings["max_length"], job.settings["seed"], job.settings.get("long"))
            names = sorted({f"layer.{c.layer}" for c in group}) + (["probs"] if any(c.has_head for c in group) else [])
            feats, hits = cache.get(texts, names, progress, log=log), cache.hits
        share = (time.perf_counter() - t0) / len(group)   # one pass serves every layer of this source
        for c in group:
            rows.append(_score_row(c, feats, job, share, hits))
            log(f"  {c.name}: " + ", ".join(f"{s} {rows[-1][s]:.4g}" for s in job.scores))
        feature_seconds[src.spec] = (time.perf_counter() - t0) if src.classical else cache.encoded_seconds
    frame = pd.DataFrame(rows)
    for s in job.scores:
        frame[f"{s}_rank"] = _ranks(frame[s])
    return frame, feature_seconds


def _classical_features(src, train) -> dict:
    """A strategy's own features (the baseline's classical ones) of the scored examples,
    fitted on them as the strategy fits them on its training split; columns that are zero
    on every example (unused TF-IDF or k-mer slots) are dropped: the same scores, smaller."""
    bb = load_backbone(src.load_spec, n_inputs=input_size(train))
    bb.fit_input_stats(train.inputs)
    src.key = src.key or f"classical-{src.spec}"
    f = encode(bb, bb.prepare_inputs(train.inputs), progress=False).numpy()
    return {"layer.1": f[:, (f != 0).any(0)]}


def _score_row(c: Candidate, feats: dict, job: _Job, share: float, cache_hits) -> dict:
    t1 = time.perf_counter()
    src, d, kind = c.source, job.data, job.data.task.kind
    f = feats[f"layer.{c.layer}"].astype(np.float64)
    row = {"candidate": c.name, "model": src.spec, "layer": c.layer, "n_layers": src.n_layers,
           "dim": f.shape[1], "kind": src.kind, "source_head": c.has_head}
    for s in job.scores:
        if s in SOURCE_SCORES:
            row[s] = SOURCE_SCORES[s](feats["probs"], d.y, kind) if c.has_head else float("nan")
        else:
            row[s] = SCORES[s](f, d.y, kind)
    row["score_seconds"] = round(share + time.perf_counter() - t1, 4)
    row["cache_hits"] = cache_hits
    return row


def _validate_into(frame: pd.DataFrame, job: _Job, log) -> tuple[pd.DataFrame, float]:
    """Fine-tune each candidate on the same examples; add the test metric, its rank and the
    seconds to `frame`; return the tau table and the total fine-tuning seconds."""
    d, metric, s = job.data, job.data.task.primary_metric, job.settings
    results = validate_candidates(job.candidates, s, d, job.out, log, job.executor)
    frame[f"test_{metric}"] = [r["metrics"].get(metric, float("nan")) for r in results]
    frame["finetune_seconds"] = [round(r["seconds"], 2) for r in results]
    finetune_total = float(sum(r["seconds"] for r in results))
    truth = frame[f"test_{metric}"] * (1.0 if d.task.higher_is_better else -1.0)
    frame[f"test_{metric}_rank"] = _ranks(truth)
    return tau_table(frame, job.scores, truth, metric), finetune_total


def _columns(score_names: list[str], metric: str, validate: bool) -> list[str]:
    return (["candidate", "model", "layer", "n_layers", "dim", "kind", "source_head"]
            + [x for s in score_names for x in (s, f"{s}_rank")]
            + ([f"test_{metric}", f"test_{metric}_rank", "finetune_seconds"] if validate else [])
            + ["score_seconds", "cache_hits"])


def _meta(job: _Job, frame: pd.DataFrame, rank_seconds: float, feature_seconds: dict) -> dict:
    d = job.data
    return {"exapt_rank": 1, "settings": job.settings, "task": d.task.kind, "classes": d.task.classes,
            "metric": d.task.primary_metric, "n_train": len(d.train), "n_val": d.n_val, "n_test": len(d.test),
            "scores": job.scores, "candidates": [c.name for c in job.candidates],
            "rank_seconds": round(rank_seconds, 3),
            "encode_seconds": {k: round(v, 3) for k, v in feature_seconds.items()},
            "suggestion": suggest(frame, job.scores, len(d.train))}
