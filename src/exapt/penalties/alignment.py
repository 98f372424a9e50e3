"""Feature alignment between the source batch and an unlabelled target batch.

`coral` (Deep CORAL, Sun & Saenko 2016, eq. 1): match second-order statistics,

    l_CORAL = || C_S - C_T ||_F^2 / (4 d^2),
    C = (X^T X - (1^T X)^T (1^T X) / n) / (n - 1)          (the feature covariance)

`mmd` (multi-kernel MMD as in DAN, Long et al. 2015, eq. 2-3): the squared maximum mean
discrepancy under a sum of Gaussian kernels k(x, y) = exp(-||x - y||^2 / (2 s^2)) whose
bandwidths s^2 are `base * 2^i` for i in -2..2 and `base` the mean squared distance
within the joint batch (held fixed, without gradient, as DAN does). The estimate is the
biased one, mean K_ss + mean K_tt - 2 mean K_st: it is never negative, which keeps a loss.

Both need unlabelled target data: `exapt fit SOURCE --adapt-to TARGET --penalty coral`.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..train.target_stream import target_features
from .base import PENALTIES, Context, Penalty, Step


def coral_loss(source: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    d = source.shape[1]

    def cov(x):
        n = x.shape[0]
        s = x.sum(0, keepdim=True)
        return (x.T @ x - s.T @ s / n) / max(n - 1, 1)

    return ((cov(source) - cov(target)) ** 2).sum() / (4 * d * d)


def mk_mmd2(source: torch.Tensor, target: torch.Tensor, n_kernels: int = 5) -> torch.Tensor:
    x = torch.cat([source, target])
    d2 = torch.cdist(x, x).pow(2)
    n = x.shape[0]
    base = d2.detach().sum() / max(n * n - n, 1)
    half = n_kernels // 2
    k = sum(torch.exp(-d2 / (2 * base * 2.0 ** i).clamp(min=1e-12)) for i in range(-half, n_kernels - half))
    m = source.shape[0]
    return k[:m, :m].mean() + k[m:, m:].mean() - 2 * k[:m, m:].mean()


class UsesTargetDomain(Penalty):
    """Shared by the penalties that need --adapt-to's unlabelled target rows: dann, coral
    and mmd compare each source batch with a target batch (`target_features`); the
    re-weighting ones read the target once, in setup."""
    needs = "target"

    def check(self, ctx: Context) -> None:
        if ctx.target is None:
            self.refuse("needs unlabelled target-domain data: add --adapt-to TARGET")

    def setup(self, ctx: Context) -> None:
        self._ctx = ctx            # ctx.unlabelled is swapped for its cached-prefix form later
        self._seed = ctx.cfg.train.seed

    def target_features(self, model, step: Step) -> torch.Tensor:
        return target_features(model, self._ctx.unlabelled, len(step.idx), self._seed, step.epoch, step.batch)


@PENALTIES.register("coral")
@dataclass
class Coral(UsesTargetDomain):
    weight: float = 1.0
    summary = "match source and target feature covariances (Deep CORAL, Sun & Saenko 2016); needs --adapt-to"

    def __post_init__(self):
        if self.weight < 0:
            raise ValueError("weight must be >= 0")

    def __call__(self, model, step: Step) -> torch.Tensor:
        return self.weight * coral_loss(step.features, self.target_features(model, step))


@PENALTIES.register("mmd")
@dataclass
class MMD(UsesTargetDomain):
    weight: float = 1.0
    kernels: int = 5
    summary = "multi-kernel MMD between source and target features (DAN, Long et al. 2015); needs --adapt-to"

    def __post_init__(self):
        if self.weight < 0:
            raise ValueError("weight must be >= 0")
        if self.kernels < 1:
            raise ValueError("kernels must be >= 1")

    def __call__(self, model, step: Step) -> torch.Tensor:
        return self.weight * mk_mmd2(step.features, self.target_features(model, step), self.kernels)
