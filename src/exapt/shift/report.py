"""The report of `exapt shift`: the verdict in plain words, `shift.json`, `report.md`, figures.

    runs/shift-<source>-<target>/
      shift.json        every number (what `ShiftReport.to_dict` holds)
      report.md         the verdict, the tables, the figures below, the settings
      projection.png    both domains on the first two principal components
      roc.png           the domain classifier's out-of-fold ROC curve
      mmd.png           the MMD permutation null and the observed MMD^2
      priors.png        source priors vs the estimated (and, if known, true) target priors
      class_drop.png    per-class recall: source model at home, on target, a target probe

The folder is written into a hidden temporary sibling and renamed into place at the end.
"""
from __future__ import annotations

import json
import shutil
import uuid
from pathlib import Path

import numpy as np

from ..errors import ExaptError
from ..estimators.label_shift import total_variation
from ..figures import png_bytes

META = "shift.json"
# Effect-size words for the domain classifier's AUC (0.5: indistinguishable, 1: disjoint).
AUC_WORDS = ((0.9, "strong"), (0.75, "moderate"), (0.6, "mild"), (0.0, "slight"))
# Below this AUC a significant difference is called negligible, not flagged: with thousands
# of rows the tests detect differences too small to matter (the issue's own band for two
# random halves of one domain is 0.5 +- 0.05).
AUC_NEGLIGIBLE = 0.55
LABEL_TV_MIN = 0.05             # below this share of moved class mass, label shift is not worth a flag
LABEL_WORDS = ((0.25, "strong"), (0.10, "moderate"), (0.0, "mild"))
CONCEPT_POINTS = 10.0           # a probe beating the source model by this much recall on a class
ILL_CONDITIONED = 1e3
RESIDUAL_AUC = 0.6             # below: re-weighting the source classes explains the domain difference


# ============================================================================ verdict
def _p(p: float, permutations: int) -> str:
    floor = 1.0 / (permutations + 1)
    if p <= floor and p < 0.001:
        return "p < 0.001"
    if p <= floor:
        return f"p <= {floor:.2g}"
    return f"p = {p:.3f}" if p < 0.1 else f"p = {p:.2f}"


def _word(value: float, table) -> str:
    return next(w for threshold, w in table if value >= threshold)


def _covariate(dc, mmd, alpha: float) -> tuple[bool, str]:
    numbers = f"AUC {dc.auc:.2f} [{dc.ci[0]:.2f}, {dc.ci[1]:.2f}], MMD {_p(mmd.p_value, mmd.permutations)}"
    by_mmd, by_auc = mmd.p_value < alpha, dc.ci[0] > 0.5
    if by_mmd and by_auc and dc.auc >= AUC_NEGLIGIBLE:
        return True, f"{_word(dc.auc, AUC_WORDS)} covariate shift ({numbers})"
    if by_mmd and by_auc:
        return False, (f"a negligible covariate difference ({numbers}): detectable, but the domain classifier "
                       f"stays below AUC {AUC_NEGLIGIBLE}")
    if by_mmd or by_auc:
        which = "the MMD test" if by_mmd else "the domain classifier"
        return False, f"weak signs of covariate shift, found by {which} only ({numbers})"
    return False, f"no covariate shift detected ({numbers})"


def _priors_text(classes, values, source, truth=None, limit: int = 4) -> str:
    order = list(range(len(classes)))
    if len(classes) > limit:  # many classes: the ones that moved most
        order = sorted(order, key=lambda i: -abs(values[i] - source[i]))[:3]
    parts = []
    for i in order:
        extra = f"source {source[i]:.2f}" + (f", true {truth[i]:.2f}" if truth is not None else "")
        parts.append(f"{classes[i]} {values[i]:.2f} ({extra})")
    return ", ".join(parts) + (", ..." if len(classes) > limit else "")


def _label(priors, residual, alpha: float) -> tuple[dict, str]:
    """Flag and words for label shift. `residual`: the domain classifier with source rows
    weighted by q(y)/p(y). Under pure label shift that weighting makes the domains
    indistinguishable (AUC ~0.5); if they stay apart, p(x | y) moved too, which is the
    very assumption BBSE and EM rest on, so their priors are then indicative only."""
    tv = total_variation(priors.bbse, priors.source)
    # significant (the predicted-class shares moved) and large enough to matter
    flagged = priors.prediction_shift_p < alpha and tv >= LABEL_TV_MIN
    reliable = residual is None or residual.auc < RESIDUAL_AUC
    flags = {"label": flagged, "label_estimates_reliable": reliable}
    estimate = _priors_text(priors.classes, priors.bbse, priors.source, priors.true_target)
    if not flagged:
        return flags, (f"no label shift detected (estimated target priors within {tv:.2f} total variation of the "
                       f"source's; predicted-class shares test p = {priors.prediction_shift_p:.2g})")
    if reliable:
        text = f"{_word(tv, LABEL_WORDS)} label shift: target priors estimated as {estimate}"
        if residual is not None:
            text += (f"; re-weighting the source classes to them leaves the domains hard to tell apart (AUC "
                     f"{residual.auc:.2f}), so the priors account for the difference")
    else:
        text = (f"label shift uncertain: BBSE puts the target priors at {estimate}, but the domains stay apart after "
                f"re-weighting the source classes to them (AUC {residual.auc:.2f}), so p(x | y) changed too and "
                "these estimates are indicative only")
    if priors.condition > ILL_CONDITIONED:
        text += " (the source model's confusion matrix is ill-conditioned: treat BBSE with caution)"
    return flags, text


def _concept(concept) -> tuple[bool, str]:
    cls, gap = concept.worst
    acc = concept.accuracy
    corrected = acc.get("source_em")
    accs = (f"target accuracy: source model {acc['source']:.2f}"
            + (f", {corrected:.2f} after label-shift correction" if corrected is not None else "")
            + f", probe {acc['probe']:.2f}")
    if gap >= CONCEPT_POINTS:
        row = concept.table.loc[cls]
        return True, (f"the source model loses {gap:.0f} points of recall on class {cls} against a probe trained on "
                      f"{concept.n_per_class} target labels per class ({row['source_balanced_recall_on_target']:.2f} "
                      f"vs {row['probe_recall_on_target']:.2f}, both prior-neutral; {accs})")
    return False, (f"no sign of concept shift: a probe on {concept.n_per_class} target labels per class beats the "
                   f"source model by less than {CONCEPT_POINTS:.0f} points of recall on every class ({accs})")


def verdict(dc, mmd, priors, concept, alpha: float = 0.05, residual=None) -> tuple[dict, str]:
    """Flags (covariate / label / concept; None = not measured) and the sentence that says them."""
    flags, parts = {}, []
    flags["covariate"], text = _covariate(dc, mmd, alpha)
    parts.append(text)
    flags["label"] = flags["concept"] = None
    if priors is not None:
        label_flags, text = _label(priors, residual, alpha)
        flags.update(label_flags)
        parts.append(text)
    if concept is not None:
        flags["concept"], text = _concept(concept)
        parts.append(text)
    sentence = "; ".join(parts) + "."
    return flags, sentence[0].upper() + sentence[1:]


def advice(rep) -> list[str]:
    """What may close the gap, from what was measured (never more than the numbers support)."""
    out = []
    f = rep.flags
    acc = rep.concept.accuracy if rep.concept is not None else {}
    lift = (f"; on this target that moves the source model's accuracy from {acc['source']:.2f} to "
            f"{acc['source_em']:.2f}" if "source_em" in acc else "")
    if f.get("label") and f.get("label_estimates_reliable"):
        out.append("Label shift: re-weight the source model's class probabilities by the estimated priors "
                   "(`exapt.estimators.label_shift.adjust_posteriors`) or weight source examples by q(y)/p(y) when "
                   f"training{lift}.")
    if f.get("label") and not f.get("label_estimates_reliable"):
        out.append("Label shift is uncertain while p(x | y) also moves: a few target labels give the target's class "
                   f"shares directly. Re-weighting by the estimated priors is a gamble here{lift}.")
    if f.get("concept"):
        out.append("The source model's decision rule does not fit the target on some classes (see the per-class "
                   "table); no re-weighting of the source fixes that. Label target examples and fine-tune on them "
                   "(`exapt compare` on the target shows how many are needed).")
    if f.get("covariate") and not f.get("concept"):
        out.append("Covariate shift: the inputs differ. Where the source model still holds up (see the per-class "
                   "table) nothing needs closing; otherwise domain adaptation (importance weights, feature "
                   "alignment) or a few target labels are the levers.")
    if not any(f.get(k) for k in ("covariate", "label", "concept")):
        out.append("Nothing to close: the measured differences are within what two samples of one domain show.")
    return out


# ============================================================================ folder
def check_out(path: Path, overwrite: bool) -> None:
    """A folder the report may go to: new, empty, or (with --overwrite) an earlier shift report."""
    if not path.exists():
        return
    if not path.is_dir():
        raise ExaptError(f"--out {path} is a file, not a folder")
    if not any(path.iterdir()):
        return
    if not (path / META).exists():
        raise ExaptError(f"--out {path} is a non-empty folder that is not an `exapt shift` report; choose another")
    if not overwrite:
        raise ExaptError(f"--out {path} already holds a shift report; pass --overwrite to replace it")


def write_folder(rep, path: Path, overwrite: bool) -> Path:
    """Everything into a temporary sibling, then one rename (the old report, if any, goes last)."""
    check_out(path, overwrite)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.tmp-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        for name, data in figures(rep).items():
            (tmp / name).write_bytes(data)
        (tmp / "report.md").write_text(markdown(rep))
        (tmp / META).write_text(json.dumps(rep.to_dict(), indent=2, default=_json_default) + "\n")
        old = None
        if path.exists():
            old = path.parent / f".{path.name}.old-{uuid.uuid4().hex[:8]}"
            path.rename(old)
        tmp.rename(path)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return path


def _json_default(v):
    if isinstance(v, (np.floating, np.integer)):
        return v.item()
    if isinstance(v, np.ndarray):
        return v.tolist()
    if isinstance(v, Path):
        return str(v)
    raise TypeError(f"not JSON serialisable: {type(v).__name__}")


# ============================================================================ figures
def _plt():
    import matplotlib  # heavy: imported on first use

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # heavy: imported on first use

    return plt


def figures(rep) -> dict[str, bytes]:
    out = {"projection.png": _projection_png(rep), "roc.png": _roc_png(rep), "mmd.png": _mmd_png(rep)}
    if rep.priors is not None:
        out["priors.png"] = _priors_png(rep)
    if rep.concept is not None:
        out["class_drop.png"] = _drop_png(rep)
    return out


def _projection_png(rep) -> bytes:
    plt = _plt()
    a, b = rep._projection
    fig, ax = plt.subplots(figsize=(5.2, 4.4))
    ax.scatter(a[:, 0], a[:, 1], s=6, alpha=0.45, label=f"source ({len(a)})", color="#1f77b4")
    ax.scatter(b[:, 0], b[:, 1], s=6, alpha=0.45, label=f"target ({len(b)})", color="#d62728")
    ax.set_xlabel("PC 1")
    ax.set_ylabel("PC 2")
    ax.set_title(f"{rep.model} features, pooled PCA", fontsize=10)
    ax.legend(markerscale=3, fontsize=8)
    return png_bytes(fig, tight=True)


def _roc_png(rep) -> bytes:
    plt = _plt()
    fpr, tpr = rep.domain.roc_curve()
    fig, ax = plt.subplots(figsize=(4.4, 4.2))
    ax.plot(fpr, tpr, color="#d62728", label=f"AUC {rep.domain.auc:.3f} [{rep.domain.ci[0]:.3f}, {rep.domain.ci[1]:.3f}]")
    ax.plot([0, 1], [0, 1], ls="--", color="grey", lw=1, label="no shift")
    ax.set_xlabel("false positive rate (source rows called target)")
    ax.set_ylabel("true positive rate")
    ax.set_title("domain classifier, out of fold", fontsize=10)
    ax.legend(loc="lower right", fontsize=8)
    return png_bytes(fig, tight=True)


def _mmd_png(rep) -> bytes:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.0, 3.4))
    null, observed = rep.mmd.null, rep.mmd.mmd2
    label = f"observed {observed:.3g}, {_p(rep.mmd.p_value, rep.mmd.permutations)}"
    if len(null):
        ax.hist(null, bins=40, color="#999999", label=f"{rep.mmd.permutations} permutations")
    span = float(null.max() - null.min()) if len(null) else 0.0
    if len(null) and span > 0 and observed > null.max() + 10 * span:
        # far off the null's scale: keep the null readable and point at the observed value
        ax.annotate(label + " ->", xy=(1.0, 0.5), xycoords="axes fraction", ha="right", color="#d62728", fontsize=8)
    else:
        ax.axvline(observed, color="#d62728", label=label)
    ax.set_xlabel("unbiased MMD$^2$")
    ax.set_title("MMD permutation test", fontsize=10)
    ax.legend(fontsize=8)
    return png_bytes(fig, tight=True)


def _bars(ax, classes, series: dict, errors: dict | None = None) -> None:
    x = np.arange(len(classes))
    width = 0.8 / len(series)
    for i, (name, values) in enumerate(series.items()):
        err = None if not errors or name not in errors else errors[name]
        ax.bar(x + (i - (len(series) - 1) / 2) * width, values, width, label=name, yerr=err, capsize=2)
    ax.set_xticks(x, [str(c) for c in classes], rotation=0 if len(classes) <= 6 else 45)
    ax.legend(fontsize=8)


def _priors_png(rep) -> bytes:
    plt = _plt()
    p = rep.priors
    series = {"source": p.source, "target, BBSE": p.bbse, "target, EM": p.em}
    errors = {"target, BBSE": np.abs(p.bbse_ci.T - p.bbse), "target, EM": np.abs(p.em_ci.T - p.em)}
    if p.true_target is not None:
        series["target, true"] = p.true_target
    fig, ax = plt.subplots(figsize=(max(5.0, 0.7 * len(p.classes) + 2), 3.6))
    _bars(ax, p.classes, series, errors)
    ax.set_ylabel("class prior")
    ax.set_title("class priors (target estimated without target labels; 95% bootstrap CI)", fontsize=10)
    return png_bytes(fig, tight=True)


def _drop_png(rep) -> bytes:
    plt = _plt()
    t = rep.concept.table
    series = {"source model, held-out source": t["source_recall_on_source"],
              "source model, target": t["source_recall_on_target"],
              "source model balanced, target": t["source_balanced_recall_on_target"],
              f"target probe ({rep.concept.n_per_class}/class), target": t["probe_recall_on_target"]}
    fig, ax = plt.subplots(figsize=(max(5.5, 0.8 * len(t) + 2), 3.8))
    _bars(ax, list(t.index), {k: np.nan_to_num(v.to_numpy(float)) for k, v in series.items()})
    ax.set_ylabel("recall")
    ax.set_ylim(0, 1.05)
    ax.set_title("per-class recall: the drop from home, and against a target probe", fontsize=10)
    return png_bytes(fig, tight=True)


# ============================================================================ markdown
def _f(v, digits: int = 3) -> str:
    return "n/a" if v is None or (isinstance(v, float) and not np.isfinite(v)) else f"{v:.{digits}f}"


def markdown(rep) -> str:
    lines = [f"# Domain shift: {rep.source} -> {rep.target}", "",
             f"**Verdict.** {rep.verdict}", "",
             f"Features: `{rep.model}`; {rep.n_source:,} source and {rep.n_target:,} target rows.", ""]
    lines += _md_covariate(rep)
    if rep.priors is not None:
        lines += _md_label(rep)
    if rep.concept is not None:
        lines += _md_concept(rep.concept)
    lines += ["## What may close the gap", "", *[f"- {a}" for a in advice(rep)], ""]
    lines += ["## Settings", ""]
    if rep.settings.get("command"):
        lines += [f"    {rep.settings['command']}", ""]
    lines += [f"- {k}: {v}" for k, v in rep.settings.items() if k != "command" and v is not None]
    lines += [f"- note: {n}" for n in rep.notes]
    lines += [f"- {rep.seconds:.1f} s", ""]
    return "\n".join(lines)


def _md_covariate(rep) -> list[str]:
    d, m = rep.domain, rep.mmd
    return ["## Covariate shift", "",
            "| test | value | meaning |", "|---|---|---|",
            f"| domain classifier AUC | {d.auc:.3f} [{d.ci[0]:.3f}, {d.ci[1]:.3f}] | 0.5: the domains cannot be "
            f"told apart; 1: perfectly ({d.folds}-fold out-of-fold logistic regression, {d.level:.0%} DeLong CI) |",
            f"| MMD^2 (unbiased) | {m.mmd2:.4g} | Gaussian kernel, bandwidth {m.bandwidth:.3g} (median heuristic), "
            f"{m.n_source:,} + {m.n_target:,} rows |",
            f"| MMD permutation p-value | {m.p_value:.4g} | share of {m.permutations} random relabellings "
            "reaching the observed MMD^2 |", "",
            "![projection](projection.png) ![ROC](roc.png) ![MMD null](mmd.png)", ""]


def _md_label(rep) -> list[str]:
    p = rep.priors
    head = "| class | source prior | target, BBSE [95% CI] | target, EM [95% CI] |"
    rule = "|---|---|---|---|"
    if p.true_target is not None:
        head, rule = head + " target, true |", rule + "---|"
    lines = ["## Label shift", "", "Target priors estimated without target labels from the source model's "
             f"outputs ({rep.source_model}).", "", head, rule]
    for i, c in enumerate(p.classes):
        row = (f"| {c} | {p.source[i]:.3f} | {p.bbse[i]:.3f} [{p.bbse_ci[i, 0]:.3f}, {p.bbse_ci[i, 1]:.3f}] | "
               f"{p.em[i]:.3f} [{p.em_ci[i, 0]:.3f}, {p.em_ci[i, 1]:.3f}] |")
        lines.append(row + (f" {p.true_target[i]:.3f} |" if p.true_target is not None else ""))
    lines += ["", f"Predicted-class shares, held-out source vs target (chi-square test): p = "
              f"{p.prediction_shift_p:.3g}. Condition number of the confusion matrix: {p.condition:.3g}."]
    r = rep.residual
    if r is not None:
        lines += ["", f"Domain classifier with each source row weighted by q(y)/p(y) (BBSE): AUC {r.auc:.3f} "
                  f"[{r.ci[0]:.3f}, {r.ci[1]:.3f}] (bootstrap). Near 0.5, the change of class priors explains the "
                  "difference between the domains; well above it, p(x | y) changed too, which BBSE and EM assume "
                  "it does not."]
    return lines + ["", "![priors](priors.png)", ""]


def _md_concept(c) -> list[str]:
    lines = ["## Concept shift", "", f"Recall per class on target rows not used for training, averaged over "
             f"{c.repeats} draws of {c.n_per_class} labelled target rows per class for the probe. Recall does not "
             "depend on the class priors, so *drop from home* is what a change of p(x | y) costs the source "
             "model. *Balanced* is the source model re-weighted to flat priors, the same prior the class-balanced "
             "probe assumes; *gap to probe* compares the two (points of recall; large: the labelling rule "
             "moved).", "",
             "| class | n | at home | on target | corrected (EM) | balanced | target probe | drop from home "
             "| gap to probe |", "|---|---|---|---|---|---|---|---|---|"]
    for cls, r in c.table.iterrows():
        lines.append(f"| {cls} | {int(r['n_eval'])} | {_f(r['source_recall_on_source'])} | "
                     f"{_f(r['source_recall_on_target'])} | {_f(r.get('source_em_recall_on_target'))} | "
                     f"{_f(r['source_balanced_recall_on_target'])} | {_f(r['probe_recall_on_target'])} | "
                     f"{_f(r['drop_from_source'], 1)} | {_f(r['gap_to_probe'], 1)} |")
    acc = ", ".join(f"{k} {v:.3f}" for k, v in c.accuracy.items())
    return lines + ["", f"Target accuracy: {acc}.", "", "![per-class drop](class_drop.png)", ""]
