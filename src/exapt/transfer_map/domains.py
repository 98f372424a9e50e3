"""The domains of a transfer map: loaded, checked against each other, and split once.

Each domain gets one held-out test split, drawn with a fixed seed (0) whatever the
training seed, so every cell of the map is scored on the same examples and the seeds
vary only the labelled examples drawn. Training examples are drawn only from the rest
(the pool), so a domain's test split never overlaps what was trained on. Pool and test
are written to DIR/splits/ as plain JSONL (text, label, row in the original data), so
every run folder points at files that exist: `exapt evaluate` / `fit --resume` work on
them as on any run.
"""
from __future__ import annotations

import hashlib
import json
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..data import Table, is_builtin, load_data, stratified_split
from ..errors import ExaptError
from ..tasks import Task

SPLIT_SEED = 0


@dataclass
class Domain:
    name: str           # as the map shows it: the built-in name, or the file's stem
    source: str         # as the user gave it
    is_file: bool
    table: Table
    pool: np.ndarray    # positions into table that training may draw from
    test: np.ndarray    # positions into table of the held-out test split

    def subset_lines(self, positions: np.ndarray) -> str:
        """JSONL of the rows at `positions`; ASCII-escaped so any text reads back exactly."""
        t = self.table
        return "".join(json.dumps({"text": t.inputs[i], "label": t.labels[i], "row": int(t.rows[i])}) + "\n"
                       for i in positions)

    @property
    def slug(self) -> str:
        return re.sub(r"[^A-Za-z0-9_.-]+", "-", self.name)

    def pool_counts(self) -> Counter:
        return Counter(self.table.labels[i] for i in self.pool)


def parse_domains(spec) -> list[str]:
    """`a,b,c` (or a list) -> names; at least two, none twice."""
    items = [s.strip() for s in spec.split(",")] if isinstance(spec, str) else [str(s).strip() for s in spec]
    items = [s for s in items if s]
    if len(items) < 2:
        raise ExaptError(f"--domains: a transfer map needs at least 2 domains (got {len(items)}: "
                         f"{', '.join(items) or 'none'}); separate them with commas")
    twice = sorted({s for s in items if items.count(s) > 1})
    if twice:
        raise ExaptError(f"--domains: {twice[0]!r} is listed twice")
    return items


def load_domains(sources: list[str], text=None, label: str = "label", test_fraction: float = 0.2,
                 max_test: int = 500) -> list[Domain]:
    """Load every domain, check that they form one classification problem, split each."""
    if not 0 < test_fraction < 1:
        raise ExaptError(f"--test-fraction must be in (0, 1) (got {test_fraction})")
    if max_test < 1:
        raise ExaptError(f"--max-test must be >= 1 (got {max_test})")
    domains = [_load(s, text, label) for s in sources]
    names = [d.name for d in domains]
    for d in domains:
        if names.count(d.name) > 1:
            same = [x.source for x in domains if x.name == d.name]
            raise ExaptError(f"--domains: {' and '.join(same)} would both be called {d.name!r} in the map; "
                             "rename one of the files")
    _check_labels(domains)
    for d in domains:
        _split(d, test_fraction, max_test)
    return domains


def _load(source: str, text, label: str) -> Domain:
    is_file = Path(source).exists()
    if not is_file and not is_builtin(source):
        try:
            load_data(source)  # its message lists the built-ins and suggests a near miss
        except ExaptError as e:
            raise ExaptError(f"--domains: unknown domain {source!r}: {e}") from None
    # --text / --label name the columns of file domains; built-ins have fixed columns
    table = load_data(source, text=text, label=label) if is_file else load_data(source)
    name = Path(source).stem if is_file else source.strip().lower()
    if table.kind != "text":
        raise ExaptError(f"--domains: {name} has numeric features; a transfer map compares text domains")
    kind = Task.from_labels("auto", table.labels, table.source).kind
    if kind != "classification":
        raise ExaptError(f"--domains: {name} is a {kind} task; a transfer map needs single-label classification")
    return Domain(name, source, is_file, table, np.empty(0, np.int64), np.empty(0, np.int64))


def _check_labels(domains: list[Domain]) -> None:
    """One label set for all: a model trained on one domain must be able to predict every
    label of every other. A label missing from one domain is named, not guessed around."""
    sets = {d.name: set(d.table.labels) for d in domains}
    union = set().union(*sets.values())
    odd = [(n, union - s) for n, s in sets.items() if union - s]
    if odd:
        name, missing = odd[0]
        shown = "; ".join(f"{n}: {', '.join(sorted(s))}" for n, s in sets.items())
        raise ExaptError(f"--domains: every domain needs the same labels, but {name} has no example of "
                         f"{', '.join(repr(x) for x in sorted(missing))} ({shown})")


def _split(d: Domain, test_fraction: float, max_test: int) -> None:
    """A stratified test split of test_fraction of the domain, at most max_test examples;
    every label keeps at least one example in the pool (a label seen once is trainable
    but absent from the test split, and the metrics say so by leaving out AUROC)."""
    n = len(d.table)
    fraction = min(test_fraction, max_test / n)
    parts = stratified_split(d.table.labels, {"train": 1 - fraction, "test": fraction}, seed=SPLIT_SEED,
                             stratify=True)
    if len(parts["test"]) == 0:
        raise ExaptError(f"--domains: {d.name} has only {n} examples, too few to hold any out for testing")
    d.pool, d.test = parts["train"], parts["test"]


def check_sizes(domains: list[Domain], n_per_class: int) -> None:
    """Every domain can give n_per_class training examples of every label from its pool."""
    for d in domains:
        counts = d.pool_counts()
        label, have = min(counts.items(), key=lambda kv: (kv[1], str(kv[0])))
        if have < n_per_class:
            raise ExaptError(f"--n-per-class {n_per_class}: {d.name} has only {have} {label!r} examples outside "
                             f"its test split; use --n-per-class {have} or less")


def split_files(out: Path, d: Domain) -> tuple[Path, Path]:
    folder = out / "splits"
    return folder / f"{d.slug}.pool.jsonl", folder / f"{d.slug}.test.jsonl"


def split_texts(d: Domain) -> tuple[str, str]:
    return d.subset_lines(d.pool), d.subset_lines(d.test)


def fingerprint(pool_text: str, test_text: str) -> str:
    """Which examples a domain's splits hold: a changed data set is a changed setting."""
    return hashlib.sha256((pool_text + "\0" + test_text).encode()).hexdigest()[:16]
