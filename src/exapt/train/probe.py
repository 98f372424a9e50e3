"""Fit a linear head to convergence on fixed features (L-BFGS, full batch).

Objective, as scikit-learn's LogisticRegression: C * sum(loss_i) + ||W||²/2 with the bias
unpenalised. We minimise it divided by C*N (the same minimiser): mean loss + ||W||²/(2CN).
One routine serves classification (softmax), multi-label (sigmoid) and regression (ridge).
"""
from __future__ import annotations

import torch
from torch import nn


def fit_linear_head(head: nn.Linear, features: torch.Tensor, targets: torch.Tensor, task, C: float = 1.0,
                    max_iter: int = 1000, tol: float = 1e-7, sample_weight: torch.Tensor | None = None) -> dict:
    """`sample_weight`: scikit-learn's, C * sum(w_i loss_i): a row of weight ALPHA counts ALPHA
    times, one of weight 0 not at all (synthetic rows, docs/augment.md)."""
    x = features.detach().float()
    n = len(x)
    lam = 1.0 / (C * n)
    w = torch.zeros_like(head.weight, requires_grad=True)
    b = torch.zeros_like(head.bias, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], lr=1, max_iter=max_iter, tolerance_grad=tol, tolerance_change=1e-12,
                            history_size=20, line_search_fn="strong_wolfe")

    def objective():
        data = task.loss(x @ w.T + b, targets, weight=sample_weight)
        if task.kind == "multilabel":  # one logistic regression per label: sum over labels
            data = data * targets.shape[1]
        return data + 0.5 * lam * (w * w).sum()

    def closure():
        opt.zero_grad()
        loss = objective()
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():
        final = objective()
        head.weight.copy_(w)
        head.bias.copy_(b)
    return {"probe_objective": float(final), "probe_iterations": int(opt.state[w]["n_iter"])}
