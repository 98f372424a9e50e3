"""Drift monitoring that knows the run: windows of served inputs against the run's own data.

The *reference* is the run's held-out test split (the training domain, rows it did not
train on): their pooled embeddings, the model's predicted classes on them, their labels
(the confusion matrix BBSE needs) and the training split's class priors.

Every `window` inputs the monitor computes, with exapt shift's estimators:
- input drift: MMD^2 with a permutation p-value (`estimators.covariate.mmd_test`), or the
  domain classifier's AUC with its DeLong interval (`domain_classifier`);
- the predicted-class distribution against the reference's (a chi-square test of the two
  count vectors: the reference is itself a sample, so a test against fixed shares would
  over-alarm) and its total-variation distance from the training priors;
- the label-shift estimate of exapt shift, BBSE (`estimators.label_shift.bbse`).

An alarm needs `patience` consecutive flagged windows (default 2): at alpha 0.01 a stream
from the training domain raises one about once in 10,000 windows, a moved one within two.
Crossing into alarm logs one line; leaving it logs one more.
"""
from __future__ import annotations

import hashlib
import json
import threading
import time
from dataclasses import asdict, dataclass, field

import numpy as np
import torch

from ..data import fit_splits, load_table
from ..estimators.covariate import domain_classifier, mmd_test
from ..estimators.label_shift import bbse, confusion_joint, total_variation
from ..files import atomic_save_tensors, load_tensors
from ..train.features import cache_root

DEFAULT_WINDOW = 200
DEFAULT_ALPHA = 0.01
DEFAULT_PATIENCE = 2
DEFAULT_REFERENCE = 300
DEFAULT_PERMUTATIONS = 500
AUC_THRESHOLD = 0.55   # Evidently's default for embedding drift; here on the AUC's lower 95% bound


@dataclass
class Reference:
    embeddings: np.ndarray           # [R, D] held-out rows of the training domain
    predicted: np.ndarray            # [R] the model's argmax on them
    classes: list[str]
    labels: np.ndarray | None = None   # [R] their labels (classification runs)
    priors: np.ndarray | None = None   # the training split's class shares
    source: str = ""

    @property
    def predicted_counts(self) -> np.ndarray:
        return np.bincount(self.predicted, minlength=len(self.classes)).astype(float)


def _batches(n: int, size: int = 64):
    for start in range(0, n, size):
        yield slice(start, min(n, start + size))


def build_reference(predictor, size: int = DEFAULT_REFERENCE, seed: int = 0, log=None) -> Reference:
    """The reference of a run predictor, from its test split; cached under $EXAPT_CACHE by
    the run's weights and data, since a server may start many times on one run."""
    cfg = predictor.config
    key = hashlib.sha256(json.dumps([predictor.folder.weights_sha256(), str(cfg.data), size, seed]).encode()).hexdigest()[:24]
    path = cache_root() / "serve-reference" / f"{key}.safetensors"
    if path.exists():
        try:
            t, meta = load_tensors(path)
            return Reference(t["embeddings"].numpy(), t["predicted"].numpy(), meta["classes"],
                             t["labels"].numpy() if "labels" in t else None,
                             t["priors"].numpy() if "priors" in t else None, meta["source"])
        except Exception:  # a damaged cache entry is recomputed, never fatal
            pass
    classification = predictor.task == "classification"
    train, _, test = fit_splits(cfg.data, load_table(cfg.data), predictor.task)
    if len(test) > size:
        test = test.subset(np.sort(np.random.default_rng(seed).choice(len(test), size, replace=False)))
    emb, logits = [], []
    for part in _batches(len(test)):
        out = predictor.outputs(predictor.backbone.prepare_inputs(test.inputs[part]))
        emb.append(out["embedding"])
        logits.append(out["logits"])
    emb, logits = np.concatenate(emb), np.concatenate(logits)
    classes = list(predictor.labels) if classification else []
    ref = Reference(emb, logits.argmax(1) if classification else np.zeros(len(emb), int), classes,
                    source=f"{len(test)} held-out rows of {cfg.data.source}")
    if classification:
        index = {c: i for i, c in enumerate(classes)}
        ref.labels = np.array([index.get(str(v), -1) for v in test.labels])
        train_y = np.array([index[str(v)] for v in train.labels if str(v) in index])
        ref.priors = np.bincount(train_y, minlength=len(classes)) / max(len(train_y), 1)
    tensors = {"embeddings": torch.as_tensor(ref.embeddings), "predicted": torch.as_tensor(ref.predicted)}
    if classification:
        tensors.update(labels=torch.as_tensor(ref.labels), priors=torch.as_tensor(ref.priors))
    atomic_save_tensors(tensors, path, {"classes": classes, "source": ref.source})
    return ref


@dataclass
class WindowResult:
    index: int
    n: int
    time: float
    mmd2: float | None = None
    mmd_p: float | None = None
    auc: float | None = None
    auc_ci: list | None = None
    predicted_shares: dict | None = None
    predicted_p: float | None = None        # chi-square, window vs reference predicted-class counts
    tv_from_priors: float | None = None
    bbse_priors: dict | None = None
    tv_bbse: float | None = None
    flags: list = field(default_factory=list)
    alarm: bool = False

    def to_dict(self) -> dict:
        return asdict(self)


class DriftMonitor:
    """Windows of (embedding, predicted class) against a Reference; thread-safe `add`."""

    def __init__(self, reference: Reference, *, window: int = DEFAULT_WINDOW, alpha: float = DEFAULT_ALPHA,
                 patience: int = DEFAULT_PATIENCE, test: str = "mmd", permutations: int = DEFAULT_PERMUTATIONS,
                 seed: int = 0, log=None, keep: int = 200):
        self.ref, self.window, self.alpha, self.patience = reference, int(window), float(alpha), int(patience)
        self.test, self.permutations, self.seed, self.log, self.keep = test, int(permutations), seed, log, keep
        self._emb: list[np.ndarray] = []
        self._pred: list[np.ndarray] = []
        self._n = 0
        self._lock = threading.Lock()
        self.history: list[WindowResult] = []
        self.windows = 0
        self.streak = 0
        self.alarm = False
        self.alarms = 0

    def add(self, embeddings: np.ndarray, logits: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
        """Append served rows; returns the windows that filled (to `evaluate`, off the request path)."""
        pred = np.asarray(logits).argmax(1) if self.ref.classes else np.zeros(len(logits), int)
        full = []
        with self._lock:
            self._emb.append(np.asarray(embeddings, np.float32))
            self._pred.append(pred)
            self._n += len(pred)
            while self._n >= self.window:
                emb, p = np.concatenate(self._emb), np.concatenate(self._pred)
                full.append((emb[:self.window], p[:self.window]))
                self._emb, self._pred, self._n = [emb[self.window:]], [p[self.window:]], len(p) - self.window
        return full

    def evaluate(self, emb: np.ndarray, pred: np.ndarray) -> WindowResult:
        """One window's statistics, flags and the alarm state after it."""
        r = WindowResult(self.windows, len(pred), time.time())
        if self.test == "mmd":
            m = mmd_test(self.ref.embeddings, emb, permutations=self.permutations, seed=self.seed + r.index)
            r.mmd2, r.mmd_p = m.mmd2, m.p_value
            if m.p_value < self.alpha:
                r.flags.append(f"input drift: MMD p = {m.p_value:.3g} < {self.alpha:g}")
        else:
            d = domain_classifier(self.ref.embeddings, emb, seed=self.seed)
            r.auc, r.auc_ci = d.auc, list(d.ci)
            if d.ci[0] > AUC_THRESHOLD:
                r.flags.append(f"input drift: domain-classifier AUC {d.auc:.3f} (lower bound {d.ci[0]:.3f} > {AUC_THRESHOLD})")
        if self.ref.classes:
            self._class_statistics(r, pred)
        with self._lock:
            self.windows += 1
            self.streak = self.streak + 1 if r.flags else 0
            was, self.alarm = self.alarm, self.streak >= self.patience
            r.alarm = self.alarm
            self.alarms += int(self.alarm and not was)
            self.history = (self.history + [r])[-self.keep:]
        if self.log is not None and self.alarm != was:
            self.log(f"exapt drift ALERT window {r.index}: {'; '.join(r.flags)} ({self.streak} windows in a row)"
                     if self.alarm else f"exapt drift cleared at window {r.index}")
        return r

    def _class_statistics(self, r: WindowResult, pred: np.ndarray) -> None:
        from scipy.stats import chi2_contingency  # heavy: imported on first use

        k = len(self.ref.classes)
        counts = np.bincount(pred, minlength=k).astype(float)
        shares = counts / counts.sum()
        r.predicted_shares = {c: round(float(s), 4) for c, s in zip(self.ref.classes, shares)}
        table = np.vstack([self.ref.predicted_counts, counts])
        table = table[:, table.sum(0) > 0]
        r.predicted_p = float(chi2_contingency(table)[1]) if table.shape[1] > 1 else 1.0
        if r.predicted_p < self.alpha:
            r.flags.append(f"predicted classes moved: chi-square p = {r.predicted_p:.3g} < {self.alpha:g}")
        if self.ref.priors is not None:
            r.tv_from_priors = total_variation(shares, self.ref.priors)
        known = self.ref.labels is not None and (self.ref.labels >= 0).all()
        if known:
            confusion = confusion_joint(self.ref.predicted, self.ref.labels, k)
            source = np.bincount(self.ref.labels, minlength=k) / len(self.ref.labels)
            est = bbse(confusion, shares, source)
            r.bbse_priors = {c: round(float(q), 4) for c, q in zip(self.ref.classes, est.priors)}
            r.tv_bbse = total_variation(est.priors, source)

    def summary(self) -> dict:
        with self._lock:
            last = self.history[-1].to_dict() if self.history else None
            return {"window": self.window, "alpha": self.alpha, "patience": self.patience, "test": self.test,
                    "windows": self.windows, "alarm": self.alarm, "alarms": self.alarms,
                    "filling": self._n, "reference": self.ref.source,
                    "training_priors": None if self.ref.priors is None else
                    {c: round(float(p), 4) for c, p in zip(self.ref.classes, self.ref.priors)},
                    "last": last, "history": [h.to_dict() for h in self.history[-20:]]}
