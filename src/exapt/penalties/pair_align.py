"""`pair-align`: pull given (source, target) pairs together in feature space.

When the two domains share items that are known to correspond (orthologous proteins
of two species, a sentence and its translation, a clean text and its OCR'd copy), the
pairs say directly what should map to the same place. The loss is the symmetric
InfoNCE of CLIP (Radford et al. 2021; van den Oord et al. 2018) over a batch of B pairs,
each pair's partner the positive and the other B-1 partners the negatives:

    z = normalise(f(source_i)), z' = normalise(f(target_j)),  S_ij = z_i . z'_j / T
    loss = weight * ( CE(S, diag) + CE(S^T, diag) ) / 2

so it pulls partners together *and* keeps different items apart (a plain distance
would let every feature collapse to one point).

    exapt fit proteins.csv --strategy lora --penalty pair-align:pairs=orthologs.csv

The pairs file has columns `source` and `target` (texts or sequences, read like the
training inputs); batches of `batch` pairs are drawn with a seed per (epoch, step), so
a resumed run draws the same ones.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from ..data.readers import read_table
from ..errors import ExaptError
from .base import PENALTIES, Context, Penalty, Step


def info_nce(source: torch.Tensor, target: torch.Tensor, temperature: float) -> torch.Tensor:
    s = nn.functional.normalize(source, dim=-1)
    t = nn.functional.normalize(target, dim=-1)
    logits = s @ t.T / temperature
    labels = torch.arange(len(s), device=s.device)
    return (nn.functional.cross_entropy(logits, labels) + nn.functional.cross_entropy(logits.T, labels)) / 2


def read_pairs(path: str) -> tuple[list[str], list[str]]:
    if not path:
        raise ExaptError("--penalty pair-align needs its pairs file: pair-align:pairs=PAIRS.csv (columns source, target)")
    df = read_table(path)
    missing = [c for c in ("source", "target") if c not in df.columns]
    if missing:
        raise ExaptError(f"{path}: pair-align needs columns 'source' and 'target'; missing {', '.join(missing)} "
                         f"(columns: {', '.join(map(str, df.columns))})")
    for col in ("source", "target"):
        values = df[col]
        empty = [i + 2 for i, v in enumerate(values) if not isinstance(v, str) or not v.strip()]
        if empty:
            raise ExaptError(f"{path}: line {empty[0]}: empty {col!r} cell; every pair needs both items")
    if len(df) < 2:
        raise ExaptError(f"{path}: {len(df)} pair(s); the contrastive loss needs at least 2")
    return list(df["source"]), list(df["target"])


@PENALTIES.register("pair-align")
@dataclass
class PairAlign(Penalty):
    pairs: str = ""
    weight: float = 1.0
    temperature: float = 0.1
    batch: int = 16
    summary = "contrastive loss pulling given (source, target) pairs together, from a CSV of pairs (InfoNCE)"

    def __post_init__(self):
        if self.weight < 0:
            raise ValueError("weight must be >= 0")
        if self.temperature <= 0:
            raise ValueError("temperature must be > 0")
        if self.batch < 2:
            raise ValueError("batch must be >= 2")

    def check(self, ctx: Context) -> None:
        if ctx.model.backbone.input_kind != "text":
            self.refuse(f"pairs are texts or sequences; --model {ctx.cfg.model} takes {ctx.model.backbone.input_kind}")
        self._source, self._target = read_pairs(self.pairs)

    def setup(self, ctx: Context) -> None:
        bb = ctx.model.backbone
        self._items = (bb.prepare_inputs(self._source), bb.prepare_inputs(self._target))
        self._seed = ctx.cfg.train.seed

    def __call__(self, model, step: Step) -> torch.Tensor:
        rng = np.random.default_rng([self._seed, step.epoch, step.batch, 0xA11])
        n = len(self._items[0])
        idx = rng.choice(n, size=min(self.batch, n), replace=False)
        bb = model.backbone
        device = step.features.device
        # the backbone's full forward, not model.features: with freeze:k the training
        # batches carry cached prefix states, these pairs carry raw tokens
        feats = [bb({k: v.to(device) for k, v in bb.collate([side[i] for i in idx]).items()}) for side in self._items]
        return self.weight * info_nce(feats[0], feats[1], self.temperature)
