"""`exapt rank --validate`: fine-tune every candidate with `exapt.fit` on the examples that
were scored, keep each result in OUT/finetune/ (so an interrupted run resumes), and
correlate each score with the test metric reached (`tau_table`)."""
from __future__ import annotations

import hashlib
import json
import re
import shutil
import tempfile
import time
from pathlib import Path

import pandas as pd

from ..errors import ExaptError
from ..executors import LocalExecutor
from ..files import atomic_write_text
from ..fit import fit
from .layer_cache import materialize
from .scores import kendall_tau, weighted_kendall_tau

FINETUNE_DIR = "finetune"


def _quiet(*_a, **_k) -> None:
    pass


def tau_table(frame: pd.DataFrame, score_names: list[str], truth: pd.Series, metric: str) -> pd.DataFrame:
    rows = []
    for s in score_names:
        ok = frame[s].notna() & truth.notna()
        n = int(ok.sum())
        wt = kt = float("nan")
        if n >= 2:
            wt = weighted_kendall_tau(frame.loc[ok, s].to_numpy(), truth[ok].to_numpy())
            kt = kendall_tau(frame.loc[ok, s].to_numpy(), truth[ok].to_numpy())
        pick = frame.loc[frame.loc[ok, s].idxmax()] if n else None
        best = frame.loc[truth[ok].idxmax()] if n else None
        rows.append({"score": s, "weighted_tau": wt, "kendall_tau": kt, "n_candidates": n,
                     "pick": None if pick is None else pick["candidate"],
                     f"pick_test_{metric}": float("nan") if pick is None else float(pick[f"test_{metric}"]),
                     "best": None if best is None else best["candidate"],
                     f"best_test_{metric}": float("nan") if best is None else float(best[f"test_{metric}"]),
                     "picks_best": None if pick is None else bool(truth[pick.name] == truth[ok].max())})
    return pd.DataFrame(rows)


def _slug(name: str) -> str:
    short = re.sub(r"[^A-Za-z0-9_.@-]+", "-", name).strip("-")[-60:]
    return f"{short}-{hashlib.sha1(name.encode()).hexdigest()[:8]}"


def validate_candidates(candidates, settings: dict, d, out: Path | None, log, executor=None) -> list[dict]:
    """Fine-tune each candidate with `exapt.fit` on the scored examples (`d`, the data rank
    loaded); metrics + seconds. `executor` (exapt.executors, started): where the fine-tunings
    run; default here, one after another.

    With ``out``, each result is kept in out/finetune/<candidate>.json and reused by a
    later call with the same settings (so an interrupted --validate picks up where it stopped)."""
    executor = executor or LocalExecutor()
    metric = d.task.primary_metric
    results, jobs = {}, []
    for i, c in enumerate(candidates):
        ident = {"candidate": c.name, "source_key": c.source.key, "layer": c.layer, "settings": settings}
        saved = _saved_result(_record(out, c), ident)
        if saved is not None:
            results[i] = saved
            log(f"  fine-tuned {c.name} before: test {metric} {saved['metrics'].get(metric, float('nan')):.4f}")
        else:
            log(f"  fine-tuning {c.name} [{i + 1}/{len(candidates)}]")
            jobs.append((i, (c, ident, settings, len(d.train))))

    def done(i: int, result: dict) -> None:   # in this process, as each fine-tuning ends
        if out is not None:
            atomic_write_text(_record(out, candidates[i]), json.dumps(result, indent=2) + "\n")
        log(f"    {candidates[i].name}: test {metric} {result['metrics'].get(metric, float('nan')):.4f} "
            f"in {result['seconds']:.1f} s")
        results[i] = result

    executor.run(finetune, jobs, done, shared=out)
    return [results[i] for i in range(len(candidates))]


def _record(out: Path | None, c) -> Path | None:
    return out / FINETUNE_DIR / f"{_slug(c.name)}.json" if out is not None else None


def _saved_result(record: Path | None, ident: dict) -> dict | None:
    """An earlier fine-tuning result of this very candidate and settings, if one was kept."""
    if record is None or not record.exists():
        return None
    try:
        saved = json.loads(record.read_text())
    except (OSError, ValueError):
        saved = {}
    return saved if saved.get("identity") == ident else None


def finetune(c, ident: dict, settings: dict, n_scored: int) -> dict:
    """One candidate fine-tuned in a temporary folder: its result. Picklable, so a
    cluster's worker can run it (exapt.executors)."""
    with tempfile.TemporaryDirectory(prefix="exapt-rank-") as work:
        return _finetune(c, ident, settings, n_scored, Path(work) / "run")


def _finetune(c, ident: dict, settings: dict, n_scored: int, work: Path) -> dict:
    s, src = settings, c.source
    t0 = time.perf_counter()
    plain = src.kind in ("pretrained", "scratch", "classifier") and not c.truncated
    init = str(src.run) if src.image and src.run is not None else None   # an image run: --init RUN
    strategy = src.spec if src.classical else s["strategy"]   # the baseline is fitted as itself
    if init or src.classical:
        model, pooling = None, None
    else:
        model = src.spec if plain else str(materialize(src, c.layer, s["max_length"], s["seed"]))
        pooling = None if plain else src.pooling
    try:
        run = fit(s["data"], strategy, model, text=s["text"], label=s["label"], task=s["task"], test=s["test"],
                  n_per_class=s["n_per_class"], seed=s["seed"], val_fraction=s["val_fraction"],
                  test_fraction=s["test_fraction"], max_test=s["max_test"], pooling=pooling,
                  max_length=s["max_length"], long=s.get("long"), epochs=s["epochs"], batch_size=s["batch_size"], init=init, out=work,
                  progress=False, log=_quiet)
    except ExaptError as e:
        raise ExaptError(f"--validate: fine-tuning {c.name}: {e}") from None
    seconds = time.perf_counter() - t0
    m = run.metrics
    if m.get("n_train") != n_scored:   # fit must train on exactly what was scored
        raise ExaptError(f"--validate: fine-tuning {c.name} trained on {m.get('n_train')} examples, "
                         f"but {n_scored} were scored")
    result = {"identity": ident, "candidate": c.name, "metrics": m["test"], "seconds": seconds,
              "train_seconds": m.get("train_seconds"), "n_train": m.get("n_train"), "n_test": m.get("n_test"),
              "model": model or run.config.model, "init": init}
    shutil.rmtree(run.path, ignore_errors=True)
    del run
    return result
