"""What `fit` does with a target domain: its splits, the validation that chooses the
epoch, and the target metrics. Kept here so fit.py reads the same with or without it.

Model selection without target labels is the weak spot of domain adaptation (the best
epoch on the *source* validation set is not the best on the target), so the run says
which validation chose its weights, in metrics.json under `model_selection`:
- `source-val`: the source validation split (the default);
- `weighted-val`: the source validation split with importance weights, i.e. an
  estimate of the target loss (IWCV, Sugiyama et al. 2007);
- `target-labels`: `--target-labels N` labelled target examples per class.
"""
from __future__ import annotations

import numpy as np
import torch

from ..errors import ExaptError
from ..estimators.density import density_ratios
from ..train.features import encode
from ..train.loop import Split

DESCRIPTIONS = {
    "source-val": "source validation split (no target labels used)",
    "weighted-val": "source validation split, importance-weighted towards the target (IWCV)",
    "target-labels": "a few labelled target examples",
    "none": "nothing: the head is fitted in closed form, with no epochs to choose from",
}


def check_selection(target, task, val_table) -> None:
    if target.selection in ("source-val", "weighted-val") and len(val_table) == 0:
        raise ExaptError(f"--select {target.selection} needs a source validation split; set --val-fraction > 0 "
                         "or give --target-labels N")
    if target.selection == "weighted-val" and task.kind != "classification":
        raise ExaptError("--select weighted-val supports single-label classification only")


def target_splits(bb, task, target) -> dict[str, Split]:
    """Prepared splits: `unlabelled` always; `test` and `val` when the target has them."""
    out = {"unlabelled": Split.prepare(bb, target.unlabelled.inputs,
                                       torch.zeros(len(target.unlabelled), dtype=torch.long))}
    for name in ("test", "val"):
        table = getattr(target, name)
        if table is not None:
            out[name] = Split.prepare(bb, table.inputs, task.encode(table.labels, table.rows, table.source))
    return out


class StartFeatures:
    """The start encoder's features (eval mode) of raw splits, each computed once: weighted
    validation, importance-weights and label-shift all read the same ones before the
    first step, when the encoder has not moved yet."""

    def __init__(self, model):
        self.model = model
        self._done: dict[int, tuple[Split, np.ndarray]] = {}

    def __call__(self, split: Split) -> np.ndarray:
        if id(split) not in self._done:  # the split is kept with its features, so its id stays its own
            self._done[id(split)] = (split, encode(self.model.backbone, split.items, progress=False).numpy())
        return self._done[id(split)][1]


def weighted_validation(features: StartFeatures, train: Split, val: Split, unlabelled: Split,
                        seed: int) -> tuple[Split, dict]:
    """The source validation split carrying density-ratio weights from a domain classifier
    fitted on the start encoder's features of source training rows vs target rows."""
    ratios, val_w = density_ratios(features(train), features(unlabelled), seed=seed, extra=features(val))
    info = {"domain_auc": round(ratios.domain_auc, 4), "val_effective_sample_size":
            round(float(val_w.sum() ** 2 / (val_w ** 2).sum()), 1), "val_rows": len(val_w)}
    return Split(val.items, val.targets, val.lengths, torch.as_tensor(val_w, dtype=torch.float32)), info


def selection_record(choice: str, val_rows: int, extra: dict | None = None) -> dict:
    return {"validation": choice, "described": DESCRIPTIONS[choice], "rows": val_rows, **(extra or {})}
