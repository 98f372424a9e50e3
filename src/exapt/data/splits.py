"""Deterministic train/val/test splits and few-shot samples.

Why not `sklearn.model_selection.train_test_split`: it does two-way splits only, it
refuses classes with one example, and its results are not nested across sample sizes.
Transfer-learning comparisons need (a) class proportions kept in every split even for
tiny data sets, (b) every class seen in training, and (c) few-shot samples where the
n=8 sample is inside the n=16 sample for the same seed, so that a curve over n
measures the effect of more data, not of a different draw.

All functions return sorted numpy int64 arrays of positions into `labels`.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Hashable, Mapping, Sequence

import numpy as np

from exapt.errors import ExaptError


def _check_fractions(fractions: Mapping[str, float]) -> dict[str, float]:
    if not fractions:
        raise ExaptError("split fractions: give at least one split, e.g. train=0.8")
    out: dict[str, float] = {}
    for name, f in fractions.items():
        try:
            f = float(f)
        except (TypeError, ValueError):
            raise ExaptError(f"split fraction for {name!r} is not a number: {f!r}") from None
        if not math.isfinite(f) or f < 0 or f > 1:
            raise ExaptError(f"split fraction for {name!r} must be between 0 and 1, got {f}")
        out[str(name)] = f
    total = sum(out.values())
    if abs(total - 1.0) > 1e-6:
        shown = ", ".join(f"{k}={v:g}" for k, v in out.items())
        raise ExaptError(f"split fractions must sum to 1, got {total:g} ({shown})")
    return out


def _largest_remainder(n: int, fracs: list[float]) -> np.ndarray:
    """Integer counts summing to n, each within 1 of n*f."""
    exact = np.array(fracs) * n
    counts = np.floor(exact + 1e-9).astype(np.int64)
    rem = exact - counts
    for k in np.argsort(-rem, kind="stable")[: n - int(counts.sum())]:
        counts[k] += 1
    return counts


def _is_class_label(v: object) -> bool:
    if isinstance(v, (bool, np.bool_)):
        return True
    if isinstance(v, (float, np.floating)):
        return False  # a regression target
    return isinstance(v, Hashable)


def _class_order(labels: Sequence) -> dict:
    """Class -> positions, classes in a fixed (sorted) order independent of row order."""
    groups: dict = {}
    for i, y in enumerate(labels):
        groups.setdefault(y, []).append(i)
    return {c: np.asarray(groups[c], dtype=np.int64)
            for c in sorted(groups, key=lambda c: (type(c).__name__, repr(c)))}


def stratified_split(labels: Sequence, fractions: Mapping[str, float], seed: int = 0,
                     stratify: bool | None = None) -> dict[str, np.ndarray]:
    """Split positions 0..N-1 into named parts with the given fractions.

    Stratified by class (each class's count in each split is within one example of
    its exact share, and split sizes are as close to N*fraction as that allows);
    every class gets at least one example in "train" (when a
    "train" split with a fraction > 0 exists). stratify=None decides from the labels:
    float labels (regression) and lists (multi-label) get a plain shuffled split.
    Deterministic for a given seed.
    """
    fr = _check_fractions(fractions)
    names, fracs = list(fr), list(fr.values())
    labels = list(labels)
    n = len(labels)
    if stratify is None:
        stratify = n > 0 and all(_is_class_label(y) for y in labels)
    elif stratify and not all(isinstance(y, Hashable) for y in labels):
        raise ExaptError("a stratified split needs one label per row, not label lists")
    rng = np.random.default_rng(seed)

    if not stratify:
        perm = rng.permutation(n)
        bounds = np.concatenate([[0], np.cumsum(_largest_remainder(n, fracs))])
        return {k: np.sort(perm[bounds[j]:bounds[j + 1]]) for j, k in enumerate(names)}

    groups = _class_order(labels)
    counts = _allocate([len(g) for g in groups.values()], fracs, n)
    if "train" in names and fr["train"] > 0:
        t = names.index("train")
        for row, size in zip(counts, (len(g) for g in groups.values())):
            if size >= 1 and row[t] == 0:  # a class seen once is still seen in training
                row[int(np.argmax(row))] -= 1
                row[t] += 1

    parts: list[list[np.ndarray]] = [[] for _ in names]
    for (cls, idx), row in zip(groups.items(), counts):
        idx = rng.permutation(idx)
        start = 0
        for j, c in enumerate(row):
            parts[j].append(idx[start:start + c])
            start += c
    return {k: np.sort(np.concatenate(parts[j])) if parts[j] else np.empty(0, np.int64)
            for j, k in enumerate(names)}


def _allocate(sizes: list[int], fracs: list[float], n: int) -> list[np.ndarray]:
    """Per-class split counts: floor of each exact share, then hand out the remaining
    examples one per (class, split) cell with a fractional share, preferring the splits
    still furthest below their target total. Each cell stays within 1 of exact."""
    target = _largest_remainder(n, fracs)
    exact = [np.array(fracs) * s for s in sizes]
    rows = [np.floor(e + 1e-9).astype(np.int64) for e in exact]
    have = np.sum(rows, axis=0) if rows else np.zeros(len(fracs), np.int64)
    # Classes with the most leftover first, so small classes can fill the gaps.
    order = sorted(range(len(sizes)), key=lambda c: -(sizes[c] - rows[c].sum()))
    for c in order:
        rem = exact[c] - rows[c]
        for _ in range(sizes[c] - int(rows[c].sum())):
            cand = [j for j in range(len(fracs)) if rem[j] > 1e-9] or range(len(fracs))
            j = max(cand, key=lambda j: (target[j] - have[j], rem[j], -j))
            rows[c][j] += 1
            have[j] += 1
            rem[j] = 0.0
    return rows


def sample_per_class(labels: Sequence, n: int, seed: int = 0) -> np.ndarray:
    """Up to n positions per class, deterministic and nested across n.

    Each class is shuffled once with the seed and its first n positions are taken, so
    for the same seed the sample for n=8 is a subset of the sample for n=16. A class
    with fewer than n examples contributes all of them, with a warning.
    """
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ExaptError(f"examples per class must be a whole number >= 1, got {n!r}")
    labels = list(labels)
    if not all(isinstance(y, Hashable) for y in labels):
        raise ExaptError("sampling per class needs one label per row, not label lists")
    rng = np.random.default_rng(seed)
    picked: list[np.ndarray] = []
    for cls, idx in _class_order(labels).items():
        idx = rng.permutation(idx)  # always drawn, so later classes don't depend on n
        if len(idx) < n:
            warnings.warn(
                f"class {cls!r} has only {len(idx)} examples, fewer than the {n} per "
                f"class asked for; using all {len(idx)}",
                stacklevel=2,
            )
        picked.append(idx[:n])
    if not picked:
        return np.empty(0, np.int64)
    return np.sort(np.concatenate(picked))
