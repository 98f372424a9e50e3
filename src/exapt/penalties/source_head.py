"""`source-head`: multi-task training that keeps the source task in the loss:

    Omega = weight * L_source(source_head(encoder(x_s)), y_s)

with one batch of labelled source examples (x_s, y_s) per step, as large as the target
batch. The source head stays as the --init run left it, so the encoder is held to
features that head can still read. Source batches are drawn from the source run's own
training examples (or --source-data), in an order fixed by (seed, epoch, step), so a
resumed run draws the same ones.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .base import PENALTIES, Context, Penalty, Step


@PENALTIES.register("source-head")
@dataclass
class SourceHead(Penalty):
    weight: float = 1.0
    needs = "init"
    summary = "keep a weighted loss on labelled source examples (multi-task)"

    def __post_init__(self):
        if self.weight < 0:
            raise ValueError("weight must be >= 0")

    def check(self, ctx: Context) -> None:
        if ctx.source is None:
            self.refuse("needs labelled source examples: start from a run with --init RUN (its own data is "
                        "used), or add --source-data FILE")
        if len(ctx.source.train) == 0:
            self.refuse(f"the source data {ctx.source.name} has no training examples")

    def setup(self, ctx: Context) -> None:
        bb = ctx.model.backbone
        self._items = bb.prepare_inputs(ctx.source.train.inputs)
        self._targets = ctx.source.train_targets
        self._task = ctx.source.task
        self._batch_size = ctx.cfg.train.batch_size
        self._seed = ctx.cfg.train.seed

    def rows(self, epoch: int, batch: int) -> np.ndarray:
        """The source rows for one step: a permutation per (seed, epoch), cycled."""
        n = len(self._items)
        order = np.random.default_rng([self._seed, epoch, 1]).permutation(n)
        start = batch * self._batch_size
        return order[np.arange(start, start + self._batch_size) % n]

    def __call__(self, model, step: Step) -> torch.Tensor:
        rows = self.rows(step.epoch, step.batch)
        bb = model.backbone
        batch = bb.collate([self._items[i] for i in rows])
        logits = model.source_head(bb(batch))
        return self.weight * self._task.loss(logits, self._targets[torch.as_tensor(rows)])
