"""train/private_head.py: DP-SGD linear heads in closed form against Opacus' own path
(GradSampleModule + DPOptimizer via train/privacy.py's PrivateTraining), and by hand."""
from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

from exapt.config import PrivacySpec
from exapt.tasks import Task
from exapt.train.privacy import PrivatePlan, opacus_probe, private_heads
from exapt.train.private_head import clipped_sums, noise, train_heads

LR, WD = 1e-2, 0.05


def _data(n=60, dim=8, classes=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, classes, (n,), generator=g)
    x = torch.randn(n, dim, generator=g) * 2 + nn.functional.one_hot(y, dim).float()  # some rows clip, some not
    return x, y, Task("classification", [str(c) for c in range(classes)])


def _opacus_head(x, y, task, plan, seed, epochs):
    """The reference: the Opacus loop private_probe ran before private_head.py."""
    assert plan.epochs == epochs
    head = nn.Linear(x.shape[1], task.n_outputs)  # made before the seed, as fit's head was
    opacus_probe(head, x, y, task, plan, LR, WD, seed)
    return head.weight.detach(), head.bias.detach()


def _closed_form_head(x, y, task, plan, seed, epochs):
    assert plan.epochs == epochs
    torch.manual_seed(seed)
    w, b = train_heads(x, [np.arange(len(x))], y, task.row_losses, plan, [seed], [torch.default_generator],
                       task.n_outputs, LR, WD)
    return w[0], b[0]


@pytest.mark.parametrize("loss", ["plain", "weighted-focal", "multilabel", "regression"])
@pytest.mark.parametrize("sigma", [0.0, None])  # None: the accountant's sigma for epsilon 2
def test_closed_form_equals_opacus(loss, sigma):
    """Same seed, same Poisson batches, same noise stream: the same head, step for step
    (tiny batches, so empty ones and clipped and unclipped rows all occur), for every
    task's loss (the closed form reads the task's row losses)."""
    x, y, task = _data()
    if loss == "weighted-focal":
        task.set_loss("0=3", "focal:2", y)
    elif loss == "multilabel":
        task, y = Task("multilabel", task.classes), (x[:, :3] > 0.5).float()
    elif loss == "regression":
        task, y = Task("regression"), x[:, 0] - x[:, 1]
    plans = [PrivatePlan(PrivacySpec(2.0, clip=0.5), n=len(x), batch_size=3, epochs=4) for _ in range(2)]
    for p in plans:
        p.noise_multiplier = p.noise_multiplier if sigma is None else sigma
    ref_w, ref_b = _opacus_head(x, y, task, plans[0], seed=7, epochs=4)
    w, b = _closed_form_head(x, y, task, plans[1], seed=7, epochs=4)
    assert plans[0].history == plans[1].history and plans[1].history[0][2] == 4 * 20
    assert ref_w.abs().max() > 0.05  # it moved
    torch.testing.assert_close(w, ref_w, rtol=1e-5, atol=1e-6)  # measured: 5e-8
    torch.testing.assert_close(b, ref_b, rtol=1e-5, atol=1e-6)


def test_clipping_by_hand():
    """row_losses z . y makes each row's logit gradient g = y. Head 0's batch:
    A: x = (3, 4), g = (1, 0): norm = |g| sqrt(|x|^2 + 1) = sqrt(26) > 1, factor 1 / (sqrt(26) + 1e-6);
    B: x = (0, 0), g = (0.3, 0.4): norm = 0.5 * 1 = 0.5 <= 1, factor 1 (clamped).
    Sum over W: factor_A g_A x_A^T; over b: factor_A g_A + g_B. Head 1's batch is empty: zeros."""
    x = torch.tensor([[3.0, 4.0], [0.0, 0.0]])
    y = torch.tensor([[1.0, 0.0], [0.3, 0.4]])
    w, b = torch.zeros(2, 2, 2), torch.zeros(2, 2)
    gw, gb = clipped_sums(x, y, [np.array([0, 1]), np.array([], dtype=np.int64)], w, b,
                          lambda z, t: (z * t).sum(-1), clip=1.0)
    f = 1 / (math.sqrt(26) + 1e-6)
    torch.testing.assert_close(gw[0], torch.tensor([[3 * f, 4 * f], [0.0, 0.0]]))
    torch.testing.assert_close(gb[0], torch.tensor([f + 0.3, 0.4]))
    assert not gw[1].any() and not gb[1].any()
    # the clipped row's total gradient (over W and b) has norm exactly the clip
    assert math.hypot(3 * f, 4 * f, f) == pytest.approx(1.0, abs=1e-5)
    # Opacus' 1e-6 in the denominator: a row of norm 1e-6 at clip 1e-6 keeps half its gradient
    _, tiny = clipped_sums(torch.zeros(1, 2), torch.tensor([[1e-6, 0.0]]), [np.array([0])], w[:1], b[:1],
                           lambda z, t: (z * t).sum(-1), clip=1e-6)
    torch.testing.assert_close(tiny[0], torch.tensor([0.5e-6, 0.0]), rtol=1e-5, atol=0)


def test_noise_is_opacus_gaussian_per_head():
    """std sigma C, mean 0, weight drawn before bias from each head's own generator; nothing at std 0."""
    w, b = torch.zeros(2, 3, 50), torch.zeros(2, 3)
    draws = [noise([torch.Generator().manual_seed(s), torch.Generator().manual_seed(s + 100)], 0.7, w, b)
             for s in range(200)]
    values = torch.cat([d[0].flatten() for d in draws] + [d[1].flatten() for d in draws])
    assert abs(values.mean().item()) < 0.01 and values.std().item() == pytest.approx(0.7, rel=0.02)
    g = torch.Generator().manual_seed(3)
    want_w = torch.normal(mean=0, std=0.7, size=(3, 50), generator=g)
    want_b = torch.normal(mean=0, std=0.7, size=(3,), generator=g)
    nw, nb = noise([torch.Generator().manual_seed(3)], 0.7, w[:1], b[:1])
    assert torch.equal(nw[0], want_w) and torch.equal(nb[0], want_b)
    zw, zb = noise([g], 0.0, w, b)
    assert not zw.any() and not zb.any() and torch.equal(g.get_state(), g.get_state())


def test_heads_together_are_the_heads_alone():
    """An audit's K shadow heads stepped as one stack equal each head trained by itself."""
    x, y, task = _data(n=40)
    rng = np.random.default_rng(0)
    rows = [np.sort(rng.choice(40, 20, replace=False)) for _ in range(3)]
    train = SimpleNamespace(epochs=3, batch_size=4, head_lr=None)
    spec = PrivacySpec(4.0)
    w, b, rec = private_heads(x, rows, y, task, spec, train, 1.0, [11, 12, 13])
    assert w.shape == (3, 3, 8) and rec["probe_epochs"] == 3 and rec["privacy"]["epsilon"] <= 4
    for k in range(3):
        wk, bk, _ = private_heads(x, rows[k:k + 1], y, task, spec, train, 1.0, [11 + k])
        torch.testing.assert_close(w[k], wk[0], rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(b[k], bk[0], rtol=1e-5, atol=1e-6)
    assert not torch.allclose(w[0], w[1])
