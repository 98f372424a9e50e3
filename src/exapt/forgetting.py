"""What a fit forgot of its source, measured: source scores before and after training.

A run that has a source task reports it in metrics.json:

    "source":     {"data", "n", "metric", "before": {...}, "after": {...}, "forgetting"}
    "source_mlm": {"corpus", "windows", "before": {"loss", "accuracy"}, "after": ..., "forgetting"}

`source`: a labelled source (fit --init RUN): the source head's metrics on RUN's held-out
examples; forgetting = before - after of the source task's primary metric (accuracy;
for regression after - before of the RMSE), so a positive number is what was lost.
`source_mlm`: a self-supervised source (--source-corpus): the held-out masked-LM loss;
forgetting = after - before (the loss went up by that much).
"""
from __future__ import annotations

from .source import prepared_split, source_metrics


class Forgetting:
    """Scores the source side of one fit; the held-out source inputs are prepared once."""

    def __init__(self, context):
        self.source = getattr(context, "source", None)
        self.mlm = getattr(context, "mlm", None)
        self._split = None

    def scores(self, model) -> dict:
        out = {}
        if self.source is not None:
            if self._split is None:
                self._split = prepared_split(model.backbone, self.source.test, self.source.test_targets)
            out["source"] = source_metrics(model, self.source, self._split)
        if self.mlm is not None:
            out["source_mlm"] = self.mlm.evaluate(model)
        return out


def forgetting_metrics(context, init, penalties, result: dict) -> dict:
    """The metrics.json entries of the source side (none for a fit without one)."""
    out = {}
    if init is not None:
        out["init"] = str(init.path)
    if penalties:
        out["penalties"] = [p.spec() for p in penalties]
    before, after = result.get("source_before", {}), result.get("source_after", {})
    if "source" in before:
        task = context.source.task
        metric = task.primary_metric
        sign = 1 if task.higher_is_better else -1
        out["source"] = {"data": context.source.name, "n": len(context.source.test), "metric": metric,
                         "before": before["source"], "after": after["source"],
                         "forgetting": sign * (before["source"][metric] - after["source"][metric])}
    if "source_mlm" in before:
        b, a = before["source_mlm"], after["source_mlm"]
        out["source_mlm"] = {"corpus": context.mlm.corpus, "windows": b["windows"],
                             "before": {k: b[k] for k in ("loss", "accuracy")},
                             "after": {k: a[k] for k in ("loss", "accuracy")},
                             "forgetting": a["loss"] - b["loss"]}
    return out


def forgetting_lines(metrics: dict) -> list[str]:
    lines = []
    s = metrics.get("source")
    if s:
        m = s["metric"]
        lines.append(f"source ({s['data']}, {s['n']} held out): {m} {s['before'][m]:.4f} -> {s['after'][m]:.4f} "
                     f"(forgot {s['forgetting']:+.4f})")
    s = metrics.get("source_mlm")
    if s:
        lines.append(f"source masked-LM ({s['corpus']}, {s['windows']} held-out windows): loss "
                     f"{s['before']['loss']:.4f} -> {s['after']['loss']:.4f} (forgot {s['forgetting']:+.4f})")
    return lines
