"""`hierarchy`: for classes in a tree, pull each class's head weights towards its parent's.

    Omega = weight / 2 * sum_{node v below the root} || theta_v - theta_parent(v) ||^2

theta of a class: its row of the head, [w_c, b_c]. theta of an inner node (a phylum,
a kingdom): the mean of its children's thetas. This is the tree-structured Gaussian
prior of Srivastava & Salakhutdinov (2013, "Discriminative transfer learning with
tree-based priors") with each inner node set to the value its children alone would
give it (their mean), which needs no extra parameters: a rare class borrows strength
from its siblings, and siblings from their cousins, through the shared parents. An
inner node with one child adds nothing; the root is pulled nowhere (a shift of every
logit changes no prediction).

The tree comes from the labels when they are paths (`Bacteria;Firmicutes;Bacilli`: every
prefix is a node) or from `taxonomy=FILE`: one path per line, `;`-separated from the
root, ending with the class as the label column writes it (`Bacteria;Firmicutes`).
As the whole penalty is a fixed linear map E of the head (rows of E: node minus parent,
both written as mixtures of classes), it costs one small matrix product per step.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..errors import ExaptError
from .base import PENALTIES, Context, Penalty, Step

SEP = ";"


@PENALTIES.register("hierarchy")
@dataclass
class Hierarchy(Penalty):
    weight: float = 0.01
    taxonomy: str = ""
    summary = "pull each class's head weights towards its parent's in a label tree"

    def __post_init__(self):
        if self.weight < 0:
            raise ValueError("weight must be >= 0")

    def check(self, ctx: Context) -> None:
        if ctx.task.kind != "classification":
            self.refuse(f"needs single-label classes in a tree; this task is {ctx.task.kind}")
        paths = self.paths(ctx.task.classes)
        self._edges = edge_matrix(ctx.task.classes, paths)

    def paths(self, classes: list[str]) -> dict[str, tuple[str, ...]]:
        """Each class's path from the root, from the file or from the labels themselves."""
        if self.taxonomy:
            return read_taxonomy(Path(self.taxonomy), classes)
        if not any(SEP in c for c in classes):
            self.refuse("needs a tree: labels written as paths (a;b;c) or taxonomy=FILE with one path per line")
        return {c: tuple(p.strip() for p in c.split(SEP)) for c in classes}

    def setup(self, ctx: Context) -> None:
        self._e = torch.as_tensor(self._edges, dtype=torch.float32)

    def __call__(self, model, step: Step) -> torch.Tensor:
        head = model.head
        theta = torch.cat([head.weight, head.bias[:, None]], 1) if head.bias is not None else head.weight
        return self.weight / 2 * ((self._e @ theta) ** 2).sum()


def read_taxonomy(path: Path, classes: list[str]) -> dict[str, tuple[str, ...]]:
    if not path.is_file():
        raise ExaptError(f"--penalty hierarchy: taxonomy file {path} not found")
    found: dict[str, tuple[str, ...]] = {}
    for i, line in enumerate(path.read_text().splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = tuple(p.strip() for p in line.split(SEP))
        if any(not p for p in parts):
            raise ExaptError(f"{path}: line {i}: empty name in the path {line!r}")
        found.setdefault(parts[-1], parts)
    missing = [c for c in classes if c not in found]
    if missing:
        raise ExaptError(f"{path}: no path for class {missing[0]!r}"
                         + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else "")
                         + "; each line is a path from the root ending with a class, e.g. Bacteria;Firmicutes")
    return {c: found[c] for c in classes}


def edge_matrix(classes: list[str], paths: dict[str, tuple[str, ...]]) -> np.ndarray:
    """E with one row per (node, parent) edge below the root: theta_node - theta_parent
    as a combination of the class rows, so that the penalty is ||E theta||^2."""
    class_of = {paths[c]: i for i, c in enumerate(classes)}
    nodes = {(): None}
    for p in paths.values():
        for k in range(1, len(p) + 1):
            nodes[p[:k]] = None
    children: dict[tuple, list[tuple]] = {n: [] for n in nodes}
    for n in nodes:
        if n:
            children[n[:-1]].append(n)
    mix: dict[tuple, np.ndarray] = {}

    def theta(node) -> np.ndarray:  # a class is its own row; an inner node the mean of its children
        if node not in mix:
            if node in class_of:
                row = np.zeros(len(classes))
                row[class_of[node]] = 1.0
            else:
                row = np.mean([theta(c) for c in children[node]], axis=0)
            mix[node] = row
        return mix[node]

    root = ()
    while len(children[root]) == 1 and root not in class_of:  # a shared top (all Bacteria) is the root
        root = children[root][0]
    rows = [theta(n) - theta(n[:-1]) for n in sorted(nodes, key=len) if len(n) > len(root)]
    rows = [r for r in rows if np.any(np.abs(r) > 1e-12)]
    return np.array(rows).reshape(len(rows), len(classes))
