"""What the transferability scores accept: the checks every score runs on its inputs
(features, class ids, regression / multi-label targets, source probabilities), each
refusing bad input with one clear `ScoreInputError`."""
from __future__ import annotations

import numpy as np

from ..errors import ExaptError

TASKS = ("classification", "regression", "multilabel")


class ScoreInputError(ExaptError, ValueError):
    """Input a score cannot use: wrong shape, NaN/inf, too few classes, unsupported task."""


def check_task(task: str) -> str:
    if task not in TASKS:
        raise ScoreInputError(f"unknown task {task!r}; expected one of {', '.join(TASKS)}")
    return task


def as_features(f, name: str = "features") -> np.ndarray:
    a = np.asarray(f)
    if a.ndim != 2:
        raise ScoreInputError(f"{name} must be a 2-D array (n_samples, n_features); got shape {a.shape}")
    if a.dtype.kind not in "biuf":
        raise ScoreInputError(f"{name} must be numeric; got dtype {a.dtype}")
    if a.shape[0] < 2 or a.shape[1] < 1:
        raise ScoreInputError(f"{name} need at least 2 samples and 1 dimension; got shape {a.shape}")
    a = np.asarray(a, dtype=np.float64)
    if not np.isfinite(a).all():
        raise ScoreInputError(f"{name} contain NaN or infinite values")
    return a


def as_class_labels(y, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Class ids -> (codes 0..C-1 of shape (n,), the distinct classes in sorted order)."""
    a = np.asarray(y)
    if a.ndim == 2 and a.shape[1] == 1:
        a = a[:, 0]
    if a.ndim != 1:
        raise ScoreInputError(f"classification labels must be a 1-D array of class ids; got shape {a.shape}")
    if len(a) != n:
        raise ScoreInputError(f"labels have {len(a)} rows but features have {n}")
    if a.dtype.kind == "f":
        if not np.isfinite(a).all():
            raise ScoreInputError("labels contain NaN or infinite values")
        if not np.all(a == np.round(a)):
            raise ScoreInputError("classification labels must be integer class ids; got fractional numbers "
                                  "(is this a regression task?)")
        a = a.astype(np.int64)
    elif a.dtype.kind not in "biuUSO":
        raise ScoreInputError(f"classification labels must be integer class ids; got dtype {a.dtype}")
    classes, codes = np.unique(a, return_inverse=True)
    if len(classes) < 2:
        raise ScoreInputError(f"need at least 2 classes; the labels hold {len(classes)}")
    return codes.reshape(-1), classes


def as_targets(y, n: int, task: str) -> np.ndarray:
    """Regression / multi-label targets -> float array of shape (n, k)."""
    a = np.asarray(y)
    if a.ndim == 1:
        a = a[:, None]
    if a.ndim != 2:
        raise ScoreInputError(f"{task} targets must have shape (n,) or (n, k); got {a.shape}")
    if len(a) != n:
        raise ScoreInputError(f"targets have {len(a)} rows but features have {n}")
    if a.dtype.kind not in "biuf":
        raise ScoreInputError(f"{task} targets must be numeric; got dtype {a.dtype}")
    a = a.astype(np.float64)
    if not np.isfinite(a).all():
        raise ScoreInputError("targets contain NaN or infinite values")
    if task == "multilabel" and not np.isin(a, (0.0, 1.0)).all():
        raise ScoreInputError("multilabel targets must be a 0/1 indicator matrix of shape (n, n_labels)")
    return a


def as_source_probs(p) -> np.ndarray:
    a = as_features(p, name="source probabilities")
    if (a < 0).any():
        raise ScoreInputError("source probabilities must be non-negative; apply a softmax to logits first")
    sums = a.sum(axis=1)
    if not np.allclose(sums, 1.0, atol=1e-2):
        raise ScoreInputError("source probabilities must sum to 1 in each row; apply a softmax to logits first")
    return a / sums[:, None]


def unsupported(name: str, task: str, supported: tuple[str, ...]) -> ScoreInputError:
    return ScoreInputError(f"score {name!r} does not support task {task!r} (it supports: {', '.join(supported)})")
