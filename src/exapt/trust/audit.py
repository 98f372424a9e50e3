"""`exapt audit RUN`: does the run leak who was in its training set?

The pool is the run's own data: its training split (the members, n of them) and as many
non-members drawn at random from its validation and test splits, rebuilt from config.yaml
exactly as the fit drew them. K shadow models are trained with the run's own config
(strategy, options, privacy) on random halves of that pool (n rows each, the target's own
training size), so each shadow's members are known and each row is in about K/2 shadows. The attack
is calibrated on those shadows only; the target's membership is used only to score it.

- `loss`: the loss-threshold attack (Yeom et al. 2018); needs no shadows.
- `lira` (default): the likelihood-ratio attack (Carlini et al. 2022), online (in- and
  out-shadows) or `--offline` (out-shadows only); statistics in audit_stats.py.

Head-only runs (linear-probe) are cheap: the frozen encoder's features are computed once
(and cached), and each shadow is a head fitted on them; a private run's K DP-SGD heads
train together as one stacked tensor (train/private_head.py), each as it would alone.
Other strategies train K full shadow fits: K times the run's own cost.
"""
from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from ..backbones import input_size
from ..config import PrivacySpec
from ..data import fit_splits, load_table
from ..errors import ExaptError
from ..run import Run, build_model
from ..run_folder import RunFolder
from ..strategies import parse_strategy
from ..train.features import FeatureCache, encode
from ..train.loop import Split, predict_logits, train
from ..train.privacy import private_heads
from .audit_figures import roc_figure
from .audit_stats import (
    FIXED_VARIANCE_BELOW,
    epsilon_lower_bound,
    lira_offline,
    lira_online,
    logit_confidence,
    loss_scores,
    roc,
    tpr_at_fpr,
)

ATTACKS = ("lira", "loss")
FPRS = (0.001, 0.01)


@dataclass
class Pool:
    tables: list          # the run's train, val and test Tables
    keep: np.ndarray      # the pool's rows, as indices into those tables in that order
    labels: np.ndarray    # encoded class of each pool row
    members: np.ndarray   # True: in the target's training split

    def __len__(self) -> int:
        return len(self.labels)


def load_pool(run: Run, seed: int = 0) -> Pool:
    """The members and, from the run's other splits, non-members with the members' class
    mix (as many per class as there are members of it, or all there are), at random; the
    splits as the fit drew them (deterministic in config.yaml)."""
    if run.task.kind != "classification":
        raise ExaptError(f"audit {run.path}: membership inference here needs a single-label classification run "
                         f"(this one is {run.task.kind})")
    try:
        table = load_table(run.config.data)
        tables = list(fit_splits(run.config.data, table, run.task.kind))
    except (ExaptError, OSError) as e:
        raise ExaptError(f"audit {run.path}: the run's data cannot be read ({str(e).splitlines()[0]}); "
                         "the audit needs the data the run was fitted on, at the path in its config.yaml") from None
    labels = np.concatenate([run.task.encode(t.labels, t.rows, t.source).numpy() for t in tables])
    n = len(tables[0])
    others = matched_non_members(labels[:n], np.arange(n, len(labels)), labels, seed)
    keep = np.r_[np.arange(n), others]
    return Pool(tables, keep, labels[keep], keep < n)


def matched_non_members(member_labels: np.ndarray, candidates: np.ndarray, labels: np.ndarray,
                        seed: int) -> np.ndarray:
    """Candidates drawn per class to match the members' class counts (sorted indices).

    Why matched: a run fitted on a class-balanced sample (`--n-per-class`) has balanced
    members, while the held-out rows keep the data's natural mix; a model's loss differs by
    class, so an attack could tell the two sets apart by their class mix alone and report
    leakage that no training row caused (a chance-level epsilon = 1 LoRA run on the tweets
    showed a loss-attack TPR of 3.4% at 1% FPR that way)."""
    rng = np.random.default_rng([seed, 0xA0D2])
    picked = []
    for c in np.unique(member_labels):
        pool = candidates[labels[candidates] == c]
        k = min(int((member_labels == c).sum()), len(pool))
        picked.append(rng.choice(pool, k, replace=False))
    return np.sort(np.concatenate(picked)) if picked else candidates[:0]


def shadow_masks(n: int, n_train: int, shadows: int, seed: int) -> np.ndarray:
    """[shadows, n] booleans: each shadow's training rows, n_train of the n, at random."""
    rng = np.random.default_rng([seed, 0xA0D1])
    masks = np.zeros((shadows, n), dtype=bool)
    for s in range(shadows):
        masks[s, rng.choice(n, n_train, replace=False)] = True
    return masks


def audit_run(path, attack: str = "lira", shadows: int = 16, offline: bool = False, seed: int = 0,
              progress: bool = True, log=print) -> dict:
    """Audit a finished run; writes audit.json and audit-roc.png into it and returns the report."""
    if attack not in ATTACKS:
        raise ExaptError(f"--attack {attack!r}: choose {' or '.join(ATTACKS)}")
    if attack == "lira" and shadows < 2:
        raise ExaptError(f"--shadows {shadows}: LiRA needs at least 2 shadow models (16 or more is usual)")
    run = Run.load(path)
    strategy = parse_strategy(run.config.strategy)
    if strategy.fits_probe and strategy.trains_encoder:
        raise ExaptError(f"audit {run.path}: shadows of --strategy {strategy.name} (a probe, then fine-tuning) "
                         "are not supported; audit a linear-probe, lora, adapter, bitfit or full run")
    started, cpu = time.perf_counter(), time.process_time()
    pool = load_pool(run, seed)
    log(f"audit of {run.path}: {int(pool.members.sum())} members, {int((~pool.members).sum())} non-members")
    head_only = not strategy.trains_encoder
    feats = pool_features(run, pool, progress) if head_only else None
    target = _head_logits(run.model.head, feats) if head_only else np.concatenate(
        [run.logits(t).numpy() for t in pool.tables])[pool.keep]
    curves = {"loss": roc(loss_scores(target, pool.labels), pool.members)}
    if attack == "lira":
        masks = shadow_masks(len(pool), len(pool) // 2, shadows, seed)
        phis = np.stack([logit_confidence(logits, pool.labels)
                         for logits in _shadows(run, strategy, pool, masks, feats, log)])
        lira = lira_offline if offline else lira_online
        name = "lira-offline" if offline else "lira-online"
        curves[name] = roc(lira(logit_confidence(target, pool.labels), phis, masks), pool.members)
    report = _report(run, pool, curves, attack, shadows if attack == "lira" else 0, (time.perf_counter() - started, time.process_time() - cpu))
    RunFolder(run.path).write_audit(report, roc_figure(curves, str(run.path.name)))
    return report


def pool_features(run: Run, pool: Pool, progress: bool) -> torch.Tensor:
    """The frozen encoder's features of every pool row (what a head-only run's shadows train on)."""
    bb = run.model.backbone
    parts = [(t.inputs, bb.prepare_inputs(t.inputs)) for t in pool.tables]
    if run.config.init is None and bb.input_kind in ("text", "image"):  # the base encoder's: cacheable
        cache = FeatureCache(bb)
        return torch.cat([cache.features(raw, prepared, progress=progress) for raw, prepared in parts])[pool.keep]
    return torch.cat([encode(bb, prepared, progress=False) for _, prepared in parts])[pool.keep]


@torch.no_grad()
def _head_logits(head: nn.Module, feats: torch.Tensor) -> np.ndarray:
    head.eval()
    return head(feats.float()).numpy()


def _split(model, inputs, targets=None) -> Split:
    bb = model.backbone
    items = bb.prepare_inputs(inputs)
    return Split(items, targets if targets is not None else torch.zeros(len(items), dtype=torch.long),
                 [bb.item_length(x) for x in items])


def _shadows(run: Run, strategy, pool: Pool, masks: np.ndarray, feats, log):
    """Each shadow's logits on the whole pool, trained with the run's config on its rows."""
    cfg = run.config
    spec = PrivacySpec.parse(cfg.privacy)
    labels = torch.as_tensor(pool.labels, dtype=torch.long)
    seeds = [cfg.train.seed + 1 + s for s in range(len(masks))]
    if feats is not None and spec is not None:  # DP-SGD heads: all shadows stepped together (private_head.py)
        rows = [np.flatnonzero(mask) for mask in masks]
        weight, bias, _ = private_heads(feats, rows, labels, run.task, spec, cfg.train, strategy.probe_C, seeds)
        log(f"{len(masks)} private shadow heads trained together")
        for w, b in zip(weight, bias):
            yield nn.functional.linear(feats.float(), w, b).numpy()
        return
    for s, mask in enumerate(masks):
        idx = torch.as_tensor(np.flatnonzero(mask))
        torch.manual_seed(seeds[s])
        if feats is not None:
            head = nn.Linear(feats.shape[1], run.model.head.out_features)
            strategy.fit_probe(head, feats[idx].float(), labels[idx], run.task)
            yield _head_logits(head, feats)
        else:
            yield _shadow_fit(run, strategy, pool, idx, labels, spec)
        if (s + 1) % max(1, len(masks) // 4) == 0:
            log(f"shadow {s + 1}/{len(masks)}")


def _shadow_fit(run: Run, strategy, pool: Pool, idx, labels, spec) -> np.ndarray:
    """One shadow of an encoder-training run: the run's model rebuilt fresh, trained on
    the shadow's rows (no validation split: every epoch runs), scored on the pool."""
    cfg = run.config
    model = build_model(cfg, run.task, input_size(pool.tables[0]), strategy)
    inputs = [x for t in pool.tables for x in (t.inputs if isinstance(t.inputs, list) else list(t.inputs))]
    rows = [inputs[k] for k in pool.keep]
    chosen = [rows[i] for i in idx.tolist()]
    if not isinstance(pool.tables[0].inputs, list):
        rows, chosen = np.stack(rows), np.stack(chosen)
    if hasattr(model.backbone, "fit_input_stats"):  # as fit does: statistics of the training rows
        model.backbone.fit_input_stats(chosen)
    with tempfile.TemporaryDirectory(prefix="exapt-shadow-") as tmp:
        train(model, strategy, run.task, _split(model, chosen, labels[idx]), None, cfg.train, tmp,
              progress=False, log=lambda *_: None, privacy=spec)
    return predict_logits(model, _split(model, rows)).numpy()


def _report(run: Run, pool: Pool, curves: dict, attack: str, shadows: int, seconds: tuple) -> dict:
    metrics = run.metrics
    privacy = metrics.get("privacy")
    delta = privacy["delta"] if privacy else 1.0 / (10 * int(pool.members.sum()))
    results = {}
    for name, c in curves.items():
        results[name] = {"auc": c["auc"], **{f"tpr_at_{f:g}_fpr": tpr_at_fpr(c, f) for f in FPRS},
                         **epsilon_lower_bound(c, delta)}
    main = "loss" if attack == "loss" else next(n for n in curves if n.startswith("lira"))
    lb = results[main]["epsilon_lower_bound"]
    report = {"run": str(run.path), "attack": main, "shadows": shadows, "n_members": int(pool.members.sum()),
              "n_non_members": int((~pool.members).sum()), "results": results,
              "seconds": round(seconds[0], 2), "cpu_seconds": round(seconds[1], 2),
              "epsilon_lower_bound": lb, "accountant_epsilon": privacy["epsilon"] if privacy else None,
              "delta": delta, "fixed_variance": 0 < shadows < FIXED_VARIANCE_BELOW}
    return report
