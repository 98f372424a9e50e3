"""The source classifier of `exapt shift`: the cross-fitted probe (estimators/probes.py),
or an existing run (`--run RUN`, an `exapt fit` folder) and its own predictions. Its
held-out source rows are the run's test split when SOURCE is the data it was fitted on,
else all of SOURCE (which must then be data the run did not train on).
"""
from __future__ import annotations

import numpy as np

from ..data import fit_splits, load_table
from ..errors import ExaptError
from ..estimators.probes import SourceOutputs
from ..run import Run


def _one_hot(prob: np.ndarray) -> np.ndarray:
    out = np.zeros_like(prob)
    out[np.arange(len(prob)), prob.argmax(1)] = 1.0
    return out


def run_outputs(run_path, domains, classes: list[str], *, source_spec: str, log=print) -> SourceOutputs:
    """Predictions of an `exapt fit` run on held-out source rows and on the target."""
    run = Run.load(run_path)
    if run.task.kind != "classification":
        raise ExaptError(f"--run {run_path}: a {run.task.kind} run; label and concept shift need a classification run")
    missing = [c for c in classes if c not in run.task.classes]
    if missing:
        raise ExaptError(f"--run {run_path}: the run does not predict class {', '.join(missing[:5])} of the source "
                         f"(its classes: {', '.join(run.task.classes[:10])})")
    columns = [run.task.classes.index(c) for c in classes]
    d = run.config.data
    if not domains.control and str(d.source) == str(source_spec):
        _, _, heldout = fit_splits(d, load_table(d), "classification")
        where = f"the run's test split of {d.source} ({len(heldout)} rows)"
    else:
        heldout = domains.source
        where = f"all {len(heldout)} source rows (assumed unseen by the run: it was fitted on {d.source})"
        log(f"  note: the run was fitted on {d.source}; its confusion matrix is measured on {where}")
    index = {c: i for i, c in enumerate(classes)}
    unknown = sorted({str(v) for v in heldout.labels} - set(index))
    if unknown:
        raise ExaptError(f"--run {run_path}: held-out rows carry labels {', '.join(unknown[:5])} that the source lacks")
    hy = np.array([index[str(v)] for v in heldout.labels])

    def probabilities(table) -> np.ndarray:
        p = run.task.probabilities(run.logits(table))[:, columns]
        return p / np.clip(p.sum(1, keepdims=True), 1e-12, None)

    hp, tp = probabilities(heldout), probabilities(domains.target)
    priors = np.bincount(hy, minlength=len(classes)) / len(hy)
    return SourceOutputs(hp, hy, tp, _one_hot(tp), priors, f"run {run_path} ({run.config.strategy}); held out: {where}")
