"""DP-SGD for linear heads on fixed features, K heads at once, without per-step hooks.

The same algorithm as Opacus 1.6's GradSampleModule + DPOptimizer on an `nn.Linear`
(train/privacy.py's `PrivateTraining`), step for step; only the bookkeeping differs:

- per-example gradients in closed form: a head z = W x + b with a row-separable loss l(z, y)
  has, for row i, dl_i/dW = g_i x_i^T and dl_i/db = g_i, g_i = dl_i/dz_i (autograd of the
  summed row losses with respect to z gives every g_i at once, because row i's loss reads
  only z_i). So Opacus' per-example norm sqrt(||g_i x_i^T||_F^2 + ||g_i||^2) is
  ||g_i|| sqrt(||x_i||^2 + 1) (the identity Opacus' own linear norm sampler uses), and the
  clipped sum is one matrix product: no [B, C, D] per-example tensor is ever formed;
- the clip factor, the noise and the scaling are DPOptimizer's: min(1, C / (norm_i + 1e-6)),
  torch.normal(0, sigma C) per parameter (weight, then bias) from the head's generator,
  nothing drawn when sigma C = 0, then division by the expected batch size (loss_reduction
  "mean"); an empty Poisson batch is noise alone;
- K heads (an audit's shadows) are stacked as [K, C, D] and stepped together: AdamW is
  elementwise, so one AdamW over the stack is K AdamWs. Each head keeps its own Poisson
  batches (its seed) and its own noise generator, so head k is the head it would have been
  alone (tests/test_private_head.py compares it with the Opacus path).

The plan (privacy.py's PrivatePlan) gives the batches, sigma, C and q; the accountant counts
one step per step here (every head takes the same number of steps at the same sigma and q).
"""
from __future__ import annotations

import numpy as np
import torch

HEAD_FLOATS = 1 << 24  # weights stacked per group of heads (~64 MB a copy; AdamW keeps ~5 copies)


def group_size(n_heads: int, out_features: int, dim: int) -> int:
    """How many heads train together: all of them unless their stacked weights grow large
    (1,000 classes x 768 features: about 20 at a time)."""
    return max(1, min(n_heads, HEAD_FLOATS // max(1, out_features * (dim + 1))))


def train_heads(x: torch.Tensor, rows: list[np.ndarray], targets: torch.Tensor, row_losses, plan, seeds: list[int],
                generators: list[torch.Generator], out_features: int, lr: float,
                weight_decay: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Heads [K, C, D] and biases [K, C] trained by DP-SGD (DP-AdamW) from zero; head k
    trains on x[rows[k]] with Poisson batches plan.batches(seeds[k], epoch) and noise from
    generators[k], for plan.epochs epochs. `row_losses(logits, targets)`: each row's loss (the task's)."""
    k_heads, dim = len(rows), x.shape[1]
    weight = torch.zeros(k_heads, out_features, dim, dtype=x.dtype)
    bias = torch.zeros(k_heads, out_features, dtype=x.dtype)
    opt = torch.optim.AdamW([weight, bias], lr=lr, weight_decay=weight_decay)
    rows = [np.asarray(r) for r in rows]
    expected = plan.n * plan.sample_rate
    sq_norms = x.pow(2).sum(-1)  # ||x_i||^2, once: every step's norms read it
    for epoch in range(plan.epochs):
        batches = [plan.batches(seed, epoch) for seed in seeds]
        for step in range(plan.steps_per_epoch):
            picks = [rows[k][batches[k][step]] for k in range(k_heads)]
            grad_w, grad_b = clipped_sums(x, targets, picks, weight, bias, row_losses, plan.spec.clip, sq_norms)
            noise_w, noise_b = noise(generators, plan.noise_multiplier * plan.spec.clip, weight, bias)
            weight.grad = (grad_w + noise_w) / expected
            bias.grad = (grad_b + noise_b) / expected
            opt.step()
            plan.count_step()
    return weight.detach(), bias.detach()


def clipped_sums(x: torch.Tensor, targets: torch.Tensor, picks: list[np.ndarray], weight: torch.Tensor,
                 bias: torch.Tensor, row_losses, clip: float,
                 sq_norms: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Each head's sum over its batch (`picks[k]`, rows of x) of per-example gradients clipped
    to `clip` over W and b together; batches of different sizes are padded to one and the
    padding masked out (its rows add exact zeros). `sq_norms`: ||x_i||^2, if computed already."""
    lengths = np.array([len(p) for p in picks])
    valid = np.arange(max(1, lengths.max(initial=0)))[None, :] < lengths[:, None]
    index = np.zeros(valid.shape, dtype=np.int64)
    index[valid] = np.concatenate(picks)  # row-major: head k's rows fill row k, in order
    index, mask = torch.from_numpy(index), torch.from_numpy(valid).to(x.dtype)
    xb = x[index]                                                     # [K, B, D]
    with torch.no_grad():
        z = torch.baddbmm(bias[:, None, :], xb, weight.transpose(1, 2))  # [K, B, C]
    g = logit_grads(z, targets[index], row_losses) * mask[..., None]
    sq = (sq_norms if sq_norms is not None else x.pow(2).sum(-1))[index]
    norms = g.norm(dim=-1) * (sq + 1).sqrt()
    factor = (clip / (norms + 1e-6)).clamp(max=1.0) * mask           # DPOptimizer.clip_and_accumulate's factor
    scaled = g * factor[..., None]
    return torch.bmm(scaled.transpose(1, 2), xb), scaled.sum(1)


def logit_grads(z: torch.Tensor, y: torch.Tensor, row_losses) -> torch.Tensor:
    """dl_i/dz_i for every row of every head: one backward pass through the summed row losses
    (rows are independent, so the sum's gradient at z_i is row i's own)."""
    k_heads, width, out = z.shape
    z = z.detach().reshape(k_heads * width, out).requires_grad_(True)
    with torch.enable_grad():
        loss = row_losses(z, y.reshape(k_heads * width, *y.shape[2:])).sum()
        (g,) = torch.autograd.grad(loss, z)
    return g.reshape(k_heads, width, out)


def noise(generators: list[torch.Generator], std: float, weight: torch.Tensor,
          bias: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Opacus' non-secure `_generate_noise`, per head and in its parameter order (weight, then
    bias), each head from its own generator; std 0 draws nothing, as Opacus does."""
    if std == 0:
        return torch.zeros_like(weight), torch.zeros_like(bias)
    w, b = [], []
    for gen in generators:
        w.append(torch.normal(mean=0, std=std, size=weight.shape[1:], generator=gen, dtype=weight.dtype))
        b.append(torch.normal(mean=0, std=std, size=bias.shape[1:], generator=gen, dtype=bias.dtype))
    return torch.stack(w), torch.stack(b)
