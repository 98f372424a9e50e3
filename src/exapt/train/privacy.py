"""Differentially private training: DP-SGD (Abadi et al. 2016) with Opacus.

`--privacy epsilon=E[,delta=D,clip=C]` makes each optimiser step private: a Poisson-sampled
batch (every training row joins with probability q = batch_size / n, so a batch's size
varies and may be empty: the guarantee assumes it), each row's gradient clipped to norm C
(Opacus' per-sample gradients), and Gaussian noise of standard deviation sigma * C added
to their sum. sigma is the smallest noise for which Opacus' RDP accountant (Renyi DP,
Mironov 2017; Opacus' `RDPAccountant`) gives (E, D)-DP after all planned steps; D
defaults to 1 / (10 n). The accountant's history lives in the checkpoint, so a resumed
run counts the steps before it.

What a private run gives up, by design (docs/trust.md):
- embedding tables stay frozen (word, position, token-type): Hugging Face broadcasts
  `position_ids` as [1, T], which breaks Opacus' per-sample gradient (opacus#841), and
  MiniLM's 11.7M-parameter word table would cost ~5.8 GB of per-sample gradients at batch 64;
- BatchNorm (efficientnet-lite0) runs on its ImageNet statistics, in eval mode, with its
  scale and shift frozen: batch statistics would mix rows, which per-row clipping cannot
  bound, and Opacus refuses a trainable layer whose buffers are not private;
- a linear probe becomes a torch head trained by DP-SGD on the cached features (the
  ordinary probe's L-BFGS solution is not private); that head skips Opacus' per-step hooks
  and computes the same clipped, noised steps in closed form (train/private_head.py), K
  heads at once for an audit's shadows.
Validation (epoch choice) and the decision rule read the validation split, outside the
guarantee's training rows; hyper-parameter search on private data is not counted in E.
"""
from __future__ import annotations

import contextlib
import functools
import math
import warnings
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from ..config import PrivacySpec
from ..errors import ExaptError
from .private_head import group_size, train_heads

ACCOUNTANT = "rdp"  # Opacus' RDPAccountant (Mironov 2017; Mironov, Talwar, Zhang 2019)
PRIVATE_STRATEGIES = ("linear-probe", "lora", "adapter", "bitfit", "full", "freeze")
BATCHNORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)
PROBE_EPOCHS = 30  # a private linear probe's default epochs (steps are cheap on cached features)
PROBE_LR = 1e-2    # its default head lr: best of 3e-3, 1e-2, 3e-2 on the tweets at epsilon 8 (docs/trust.md)
# its expected batch: a quarter of the rows (unless --batch-size is larger). The noise added
# each step has norm ~ sigma C sqrt(parameters) whatever the batch, the clipped signal grows
# with the batch, so a wide head (10 classes x 1280 features) drowns at batch 16; DP
# linear-model work uses large batches for this reason (Tramer & Boneh 2021, Mehta et al.
# 2022). On validation: mnist / efficientnet-lite0 0.766 -> 0.879 at epsilon 8, the tweets
# 0.656 -> 0.649 (154 rows: the same) (docs/trust.md)
PROBE_SAMPLING = 0.25


def probe_batch(batch_size: int, n: int) -> int:
    """A private probe's expected batch on n rows: a quarter of them, or --batch-size if larger."""
    return max(batch_size, math.ceil(n * PROBE_SAMPLING))


@contextlib.contextmanager
def _rdp_quiet():
    """Opacus' RDP analysis warns "Optimal order is the largest alpha" for the low noise
    levels its binary search tries on the way; at the noise chosen, orders up to 1024
    give the same multiplier to 4 digits (measured on the trust table's tweets and mnist
    runs), and a spent epsilon read at too small an order is an overestimate, so still a
    guarantee. Dozens of those lines per fit said nothing a user could act on."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Optimal order is the largest alpha")
        yield


def check_private(cfg, strategy, penalties) -> PrivacySpec | None:
    """The fit's privacy spec, or None; a strategy or option that cannot be made private
    is said in one line before anything is written."""
    spec = PrivacySpec.parse(cfg.privacy)
    if spec is None:
        return None
    if strategy.name not in PRIVATE_STRATEGIES:
        raise ExaptError(f"--privacy with --strategy {strategy.name}: Opacus cannot make that strategy private "
                         f"here; use one of {', '.join(PRIVATE_STRATEGIES)}")
    if penalties:
        raise ExaptError("--privacy with --penalty: a penalty's gradient is not clipped per example; drop one")
    if cfg.adapt.data or cfg.source.data or cfg.source.corpus:
        raise ExaptError("--privacy with --adapt-to / --source-data: those add unclipped gradients; drop one")
    if cfg.data.synthetic:  # DP-SGD clips every example to one norm: an ALPHA weight would go unseen
        raise ExaptError("--privacy with --synthetic: private training does not weight synthetic rows by ALPHA; "
                         "drop one")
    return spec


@dataclass
class PrivatePlan:
    """What the accountant needs, fixed before the first step: n, q, steps, sigma."""
    spec: PrivacySpec
    n: int
    batch_size: int
    epochs: int
    delta: float = 0.0
    sample_rate: float = 0.0
    steps_per_epoch: int = 0
    noise_multiplier: float = 0.0
    history: list = field(default_factory=list)  # the accountant's (sigma, q, steps) records

    def __post_init__(self):
        if self.n < 1:
            raise ExaptError("--privacy: no training rows")
        self.delta = self.spec.delta if self.spec.delta is not None else 1.0 / (10 * self.n)
        self.sample_rate = min(1.0, self.batch_size / self.n)
        self.steps_per_epoch = max(1, round(1 / self.sample_rate))  # one expected pass over the rows
        self.noise_multiplier = noise_for(self.spec.epsilon, self.delta, self.sample_rate,
                                          self.epochs * self.steps_per_epoch)

    def batches(self, seed: int, epoch: int) -> list[np.ndarray]:
        """Poisson sampling: each row joins each batch independently with probability q;
        deterministic per (seed, epoch), so a resumed run replays the same batches."""
        rng = np.random.default_rng([seed, epoch, 0xD5])
        return [np.flatnonzero(rng.random(self.n) < self.sample_rate) for _ in range(self.steps_per_epoch)]

    def accountant(self):
        from opacus.accountants import RDPAccountant  # heavy: imported on first use

        acc = RDPAccountant()
        acc.history = [tuple(h) for h in self.history]
        return acc

    def count_step(self) -> None:
        """One noisy step, in the accountant's run-length form."""
        sigma, q = self.noise_multiplier, self.sample_rate
        if self.history and tuple(self.history[-1][:2]) == (sigma, q):
            self.history[-1] = (sigma, q, self.history[-1][2] + 1)
        else:
            self.history.append((sigma, q, 1))

    def record(self) -> dict:
        """metrics.json's `privacy`: the guarantee spent and what produced it."""
        steps = sum(h[2] for h in self.history)
        with _rdp_quiet():
            spent = self.accountant().get_epsilon(self.delta) if steps else 0.0
        return {"epsilon": round(float(spent), 4), "target_epsilon": self.spec.epsilon, "delta": self.delta,
                "noise_multiplier": round(self.noise_multiplier, 6), "clip": self.spec.clip,
                "sample_rate": self.sample_rate, "steps": steps, "expected_batch_size": self.n * self.sample_rate,
                "n_private_rows": self.n, "accountant": ACCOUNTANT, "sampling": "poisson"}


@functools.lru_cache(maxsize=64)  # an audit's shadows ask the same question (seconds of search each)
def noise_for(epsilon: float, delta: float, q: float, steps: int) -> float:
    from opacus.accountants.utils import get_noise_multiplier  # heavy: imported on first use

    try:
        with _rdp_quiet():
            return float(get_noise_multiplier(target_epsilon=epsilon, target_delta=delta, sample_rate=q,
                                              steps=steps, accountant=ACCOUNTANT))
    except ValueError as e:
        raise ExaptError(f"--privacy epsilon={epsilon:g}: Opacus finds no noise level for it ({e})") from None


def frozen_for_privacy(model: nn.Module) -> set[str]:
    """Parameters a private run never trains: embedding tables and BatchNorm (module doc)."""
    names = set()
    for prefix, module in model.named_modules():
        if isinstance(module, (nn.Embedding, *BATCHNORMS)):
            names |= {f"{prefix}.{n}" if prefix else n for n, _ in module.named_parameters()}
    return names


def batchnorm_eval(model: nn.Module) -> None:
    """BatchNorm on its stored statistics, never a batch's (module doc)."""
    for m in model.modules():
        if isinstance(m, BATCHNORMS):
            m.eval()


class PrivateTraining:
    """The model wrapped for per-sample gradients and the optimiser for clip + noise."""

    def __init__(self, plan: PrivatePlan, model: nn.Module, optimizer):
        from opacus import GradSampleModule  # heavy: imported on first use
        from opacus.optimizers import DPOptimizer  # heavy: imported on first use

        self.plan = plan
        # a head over fixed features has no input that needs a gradient: Opacus' hooks say so, harmlessly
        warnings.filterwarnings("ignore", message="Full backward hook is firing")
        self.module = GradSampleModule(model, batch_first=True, loss_reduction="mean", strict=True)
        # noise from the global torch generator: seeded by the fit and saved in checkpoints
        self.optimizer = DPOptimizer(optimizer, noise_multiplier=plan.noise_multiplier, max_grad_norm=plan.spec.clip,
                                     expected_batch_size=plan.n * plan.sample_rate, loss_reduction="mean")

    def step(self, empty: bool = False) -> None:
        """Clip, noise, update; the accountant counts the step (an empty batch too)."""
        for p in self.optimizer.params:
            if empty:  # no row: the step is noise alone, as the accountant assumes
                p.grad_sample = torch.zeros(0, *p.shape, dtype=p.dtype, device=p.device)
            elif getattr(p, "grad_sample", None) is None:
                raise ExaptError("--privacy: Opacus computed no per-example gradient for a trainable "
                                 "parameter; this strategy cannot be made private as it is")
        self.optimizer.step()
        self.plan.count_step()

    def close(self) -> None:
        """Hooks off and per-sample buffers gone: the model is an ordinary module again."""
        self.optimizer.zero_grad(set_to_none=True)
        self.module._close()


def private_probe(head: nn.Linear, features: torch.Tensor, targets: torch.Tensor, task, spec: PrivacySpec,
                  train, C: float, seed: int) -> dict:
    """A linear head trained by DP-SGD (DP-AdamW) on fixed features: the private form of
    the linear probe (train/private_head.py: Opacus' algorithm without its per-step hooks).
    Weight decay 1/(C n) mirrors the probe's L2 term; it is data-free. Noise comes from the
    global generator seeded here, the stream Opacus' DPOptimizer drew from."""
    torch.manual_seed(seed)
    weight, bias, probe = private_heads(features, [np.arange(len(features))], targets, task, spec, train, C, [seed],
                                        [torch.default_generator])
    with torch.no_grad():
        head.weight.copy_(weight[0])
        head.bias.copy_(bias[0])
    for p in head.parameters():
        p.requires_grad_(True)
    head.eval()
    return probe


def private_heads(features: torch.Tensor, rows: list[np.ndarray], targets: torch.Tensor, task, spec: PrivacySpec,
                  train, C: float, seeds: list[int], generators: list | None = None):
    """K private probes at once (an audit's shadows): head k trains on features[rows[k]]
    with seed seeds[k] (its Poisson batches; its noise, unless `generators` are given), as
    `private_probe` would train it alone. All rows lists have one length n. Returns the
    weights [K, C, D], biases [K, C] and the probe record (the same for every head)."""
    n = len(rows[0])
    epochs = train.epochs or PROBE_EPOCHS
    generators = generators or [torch.Generator().manual_seed(s) for s in seeds]
    x = features.detach().float()
    out = task.n_outputs
    weights, biases, plan = [], [], None
    group = group_size(len(rows), out, x.shape[1])
    for at in range(0, len(rows), group):
        # each group is counted afresh: the same record
        plan = PrivatePlan(spec, n, probe_batch(train.batch_size, n), epochs)
        w, b = train_heads(x, rows[at:at + group], targets, task.row_losses, plan, seeds[at:at + group],
                           generators[at:at + group], out, train.head_lr or PROBE_LR, 1.0 / (C * n))
        weights.append(w)
        biases.append(b)
    return torch.cat(weights), torch.cat(biases), {"probe_epochs": epochs, "privacy": plan.record()}


def opacus_probe(head: nn.Linear, features: torch.Tensor, targets: torch.Tensor, task, plan: PrivatePlan, lr: float,
                 weight_decay: float, seed: int) -> None:
    """The same private head through Opacus' GradSampleModule + DPOptimizer, step by step:
    the reference that private_head.py is tested and timed against (tests/test_private_head.py,
    benchmarks/trust_bench.py); fit and audit use the closed form. Make `head` before calling:
    the noise stream starts at torch.manual_seed(seed) here."""
    torch.manual_seed(seed)
    nn.init.zeros_(head.weight)
    nn.init.zeros_(head.bias)
    opt = torch.optim.AdamW(head.parameters(), lr=lr, weight_decay=weight_decay)
    private = PrivateTraining(plan, head, opt)
    x = features.detach().float()
    try:
        for epoch in range(plan.epochs):
            for idx in plan.batches(seed, epoch):
                if len(idx):
                    task.loss(private.module(x[torch.as_tensor(idx)]), targets[torch.as_tensor(idx)]).backward()
                private.step(empty=not len(idx))
                private.optimizer.zero_grad(set_to_none=True)
    finally:
        private.close()


def privacy_line(metrics: dict) -> str:
    """fit's summary line of a private run's budget ("" for a run without --privacy)."""
    r = metrics.get("privacy")
    if not r:
        return ""
    return (f"private ({r['accountant']} accountant): epsilon {r['epsilon']:.3g} of {r['target_epsilon']:g}, "
            f"delta {r['delta']:.2g}, noise multiplier {r['noise_multiplier']:.3g}, clip {r['clip']:g}, "
            f"sampling rate {r['sample_rate']:.3g}, {r['steps']} steps")
