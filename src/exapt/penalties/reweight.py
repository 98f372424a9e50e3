"""Re-weighting the source loss towards the target domain.

`importance-weights` (covariate shift, p(x) moves, p(y|x) stays): each source example's
loss is weighted by w(x) = p_target(x) / p_source(x), estimated once from a domain
classifier on the start encoder's features (estimators/density.py: out of fold, clipped,
mean 1). Minimising the weighted source loss then minimises an estimate of the target
loss (Shimodaira 2000; Sugiyama et al. 2007).

`label-shift` (p(y) moves, p(x|y) stays): each source example of class y is weighted by
w(y) = q(y) / p(y), q the target's class priors estimated without target labels by BBSE
(Lipton et al. 2018, exapt.estimators.label_shift) from a cross-fitted probe on the start
encoder's features, p the source training priors.

Both act through the loss, as a penalty term that turns the task's mean loss into the
weighted mean: penalty = mean_i (w_i - 1) * loss_i, so task loss + penalty =
mean_i w_i * loss_i exactly. (The logged penalty value can therefore be negative.)
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from ..estimators.density import density_ratios
from ..estimators.label_shift import bbse, confusion_joint
from ..estimators.probes import cross_fitted_probe
from .alignment import UsesTargetDomain
from .base import PENALTIES, Context, Step


class WeightsTheLoss(UsesTargetDomain):
    def check(self, ctx: Context) -> None:
        super().check(ctx)
        if ctx.task.kind != "classification":
            self.refuse(f"re-weights a single-label classification loss; this task is {ctx.task.kind}")

    def weights(self, ctx: Context, source: np.ndarray, target: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def setup(self, ctx: Context) -> None:
        super().setup(ctx)
        source, target = ctx.start_features(ctx.train), ctx.start_features(ctx.unlabelled)
        self._targets = ctx.train.targets
        self._weights = torch.as_tensor(self.weights(ctx, source, target), dtype=torch.float32)

    def __call__(self, model, step: Step) -> torch.Tensor:
        idx = torch.as_tensor(step.idx)
        targets = self._targets[idx].to(step.features.device)
        loss = nn.functional.cross_entropy(model.head(step.features), targets, reduction="none")
        return ((self._weights[idx].to(loss.device) - 1) * loss).mean()


@PENALTIES.register("importance-weights")
@dataclass
class ImportanceWeights(WeightsTheLoss):
    clip: float = 10.0
    summary = "weight source examples by p_target(x)/p_source(x) from a domain classifier; needs --adapt-to"

    def __post_init__(self):
        if self.clip <= 1:
            raise ValueError("clip must be > 1")

    def weights(self, ctx, source, target):
        ratios, _ = density_ratios(source, target, clip=self.clip, seed=ctx.cfg.data.seed)
        ctx.log(f"importance weights: domain classifier AUC {ratios.domain_auc:.3f}; {ratios.clipped} of "
                f"{len(source)} clipped at {self.clip:g}; effective sample size {ratios.effective_sample_size:.0f}")
        return ratios.weights


@PENALTIES.register("label-shift")
@dataclass
class LabelShift(WeightsTheLoss):
    summary = "weight source classes by q(y)/p(y), target priors q estimated by BBSE; needs --adapt-to"

    def weights(self, ctx, source, target):
        k = len(ctx.task.classes)
        y = ctx.train.targets.numpy()
        out = cross_fitted_probe(source, y, target, n_classes=k, seed=ctx.cfg.data.seed)
        p = np.bincount(y, minlength=k) / len(y)
        est = bbse(confusion_joint(out.heldout_probabilities.argmax(1), out.heldout_labels, k),
                   out.target_votes.mean(0), p)
        w = est.priors / np.clip(p, 1e-12, None)
        ctx.log("label shift (BBSE): target priors " + ", ".join(
            f"{c} {q:.2f} (source {s:.2f})" for c, q, s in zip(ctx.task.classes, est.priors, p)))
        per_row = w[y]
        return per_row / per_row.mean()
