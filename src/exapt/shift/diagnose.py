"""`exapt.shift.diagnose`: the whole diagnosis, from two data names to a `ShiftReport`.

    from exapt.shift import diagnose
    rep = diagnose("tweets-airline", "tweets-self-driving", out="runs/shift-air-sd")
    print(rep.verdict)
    rep.domain.auc, rep.mmd.p_value, rep.priors.bbse, rep.concept.table

Order of work: every input and option is checked, and the output folder is checked,
before any feature is computed; the report folder is written into a temporary sibling
and renamed into place at the end, so an error or Ctrl-C leaves nothing half-written.
"""
from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..backbones import family_of, split_scratch
from ..errors import ExaptError
from ..estimators import covariate, label_shift
from ..estimators.probes import SourceOutputs, cross_fitted_probe
from ..run_folder import RunFolder
from . import report
from .concept import DEFAULT_N_PER_CLASS, ConceptResult, concept_shift
from .domains import Domains, domain_features, load_domains, resolve_model
from .source_model import run_outputs

DEFAULT_MAX_PER_DOMAIN = 2000


@dataclass
class ShiftReport:
    source: str
    target: str
    model: str
    control: bool
    n_source: int
    n_target: int
    domain: covariate.DomainClassifierResult
    mmd: covariate.MMDResult
    priors: label_shift.PriorEstimate | None
    residual: covariate.DomainClassifierResult | None   # domain classifier, source re-weighted to the BBSE priors
    concept: ConceptResult | None
    flags: dict                         # covariate / label / concept -> bool (concept None: not measured)
    verdict: str
    settings: dict
    notes: list[str] = field(default_factory=list)
    source_model: str = ""
    seconds: float = 0.0
    path: Path | None = None
    _projection: tuple | None = field(default=None, repr=False)   # (2-D source, 2-D target) for the figure

    def to_dict(self) -> dict:
        return {"exapt_shift": 1, "source": self.source, "target": self.target, "model": self.model,
                "control": self.control, "n_source": self.n_source, "n_target": self.n_target,
                "verdict": self.verdict, "flags": self.flags,
                "covariate": {"domain_classifier": self.domain.to_dict(), "mmd": self.mmd.to_dict()},
                "label": None if self.priors is None else {
                    **self.priors.to_dict(),
                    "reweighted_domain_classifier": self.residual.to_dict() if self.residual is not None else None},
                "concept": self.concept.to_dict() if self.concept is not None else None,
                "source_model": self.source_model, "settings": self.settings, "notes": self.notes,
                "seconds": round(self.seconds, 2)}


def _slug(name: str) -> str:
    stem = Path(str(name)).stem if Path(str(name)).suffix else str(name)
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", stem).strip("-") or "data"


def default_out(source: str, target: str | None, control: bool) -> Path:
    if control or target is None or str(target) == str(source):
        return Path("runs") / f"shift-{_slug(source)}-control"
    return Path("runs") / f"shift-{_slug(source)}-{_slug(target)}"


def _source_outputs(d: Domains, xs, xt, run, source: str, seed: int, log) -> SourceOutputs:
    if run is not None:
        return run_outputs(run, d, d.classes, source_spec=source, log=log)
    return cross_fitted_probe(xs, d.source_y, xt, len(d.classes), seed=seed)


def _run_model(run) -> str | None:
    """The base model a run was fitted on: the features its predictions come from (None:
    not a pretrained one, e.g. an mlp, so the data's default applies)."""
    try:
        spec = RunFolder(run).read_config().model
    except Exception:  # an unreadable run is reported by run_outputs with its own message
        return None
    base, _ = split_scratch(str(spec or ""))
    if not base or not family_of(base).pretrained:
        return None
    return spec


def _projection(xs: np.ndarray, xt: np.ndarray, seed: int, n: int = 1000) -> tuple[np.ndarray, np.ndarray]:
    """Both domains on the first two principal components of the pooled, standardised features."""
    from sklearn.decomposition import PCA  # heavy: imported on first use

    rng = np.random.default_rng(seed)
    a = xs[rng.choice(len(xs), min(n, len(xs)), replace=False)]
    b = xt[rng.choice(len(xt), min(n, len(xt)), replace=False)]
    a, b = covariate.standardise_pooled(a, b)
    pca = PCA(2, random_state=seed).fit(np.vstack([a, b]))
    return pca.transform(a), pca.transform(b)


def _check_options(run, target_labels, permutations: int, alpha: float) -> None:
    if target_labels is not None and target_labels < 0:
        raise ExaptError(f"--target-labels {target_labels}: give a number of labelled target rows per class (>= 0)")
    if permutations < 0:
        raise ExaptError(f"--permutations {permutations}: give 0 or more")
    if not 0 < alpha < 1:
        raise ExaptError(f"--alpha {alpha}: give a level between 0 and 1")
    if run is not None and not Path(run).is_dir():
        raise ExaptError(f"--run {run}: no such run folder")


def _covariate(xs, xt, permutations: int, seed: int, log):
    log("covariate shift: domain classifier ...")
    dc = covariate.domain_classifier(xs, xt, seed=seed)
    log(f"  AUC {dc.auc:.3f} [{dc.ci[0]:.3f}, {dc.ci[1]:.3f}]; MMD permutation test ...")
    mmd = covariate.mmd_test(xs, xt, permutations=permutations, seed=seed)
    log(f"  MMD^2 {mmd.mmd2:.4g}, p = {mmd.p_value:.4g}")
    return dc, mmd


@dataclass
class _LabelSide:
    """Label and concept shift, measured when the source has classes."""
    priors: label_shift.PriorEstimate | None = None
    residual: covariate.DomainClassifierResult | None = None
    concept: ConceptResult | None = None
    source_desc: str = ""


def _label_side(d: Domains, xs, xt, run, source: str, target_labels, seed: int, notes: list, log) -> _LabelSide:
    if d.classes is None:
        if target_labels:
            raise ExaptError(f"--target-labels {target_labels}: the source has no class labels to compare with")
        return _LabelSide()
    log("label shift: source classifier, BBSE and EM ...")
    outputs = _source_outputs(d, xs, xt, run, source, seed, log)
    true_target = (np.bincount(d.target_y, minlength=len(d.classes)) / len(d.target_y)
                   if d.target_y is not None else None)
    priors = label_shift.estimate_priors(outputs.heldout_probabilities, outputs.heldout_labels,
                                         outputs.target_probabilities, d.classes,
                                         target_votes=outputs.target_votes,
                                         training_priors=outputs.training_priors, seed=seed,
                                         true_target=true_target)
    log("  domain classifier with the source re-weighted to those priors ...")
    w = priors.bbse / np.clip(priors.source, 1e-12, None)
    side = _LabelSide(priors, covariate.domain_classifier(xs, xt, seed=seed, source_weights=w[d.source_y]),
                      source_desc=outputs.description)
    n = DEFAULT_N_PER_CLASS if target_labels is None else target_labels
    if d.target_y is not None and n > 0:
        log(f"concept shift: probes on {n} target labels per class ...")
        side.concept = concept_shift(xt, d.target_y, outputs, d.classes, n_per_class=n, seed=seed,
                                     bbse_priors=priors.bbse, em_priors=priors.em)
    elif d.target_y is None:
        notes.append(f"{d.target_name} has no labels: concept shift is not measured")
    return side


def diagnose(source: str, target: str | None = None, model: str | None = None, *, control: bool = False,
             text=None, label: str = "label", features=None, run=None, target_labels: int | None = None,
             max_per_domain: int = DEFAULT_MAX_PER_DOMAIN, permutations: int = covariate.DEFAULT_PERMUTATIONS,
             seed: int = 0, max_length: int = 128, alpha: float = 0.05, out=None, write: bool = True,
             overwrite: bool = False, progress: bool = True, log=print, command: str | None = None) -> ShiftReport:
    """Diagnose the shift from SOURCE to TARGET (or between two random halves of SOURCE).

    ``target_labels``: labelled target rows per class for the concept-shift probe (default
    20 when TARGET has labels; 0 turns concept shift off). ``run``: an `exapt fit` run folder
    to judge label/concept shift with, instead of a probe on source features. With
    ``write`` (default), the report folder goes to ``out`` (default runs/shift-SOURCE-TARGET).
    """
    log = log or (lambda *_a, **_k: None)
    started = time.perf_counter()
    if isinstance(text, str) and "," in text:
        text = [c.strip() for c in text.split(",") if c.strip()]
    if isinstance(features, str):
        features = [c.strip() for c in features.split(",") if c.strip()]
    _check_options(run, target_labels, permutations, alpha)
    path = Path(out) if out else default_out(source, target, control)
    if write:
        report.check_out(path, overwrite)
    d = load_domains(source, target, control=control, text=text, label=label, features=features,
                     max_per_domain=max_per_domain, seed=seed)
    if model is None and run is not None:
        model = _run_model(run)
    model_name = resolve_model(model, d.source.kind)
    if run is not None and d.classes is None:
        raise ExaptError(f"--run {run}: the source has no class labels to judge the run with")
    log(f"source {d.source_name}: {len(d.source):,} rows; target {d.target_name}: {len(d.target):,} rows; "
        f"features: {model_name}")
    xs, xt = domain_features(d, model_name, max_length=max_length, progress=progress)
    dc, mmd = _covariate(xs, xt, permutations, seed, log)
    notes = list(d.notes)
    side = _label_side(d, xs, xt, run, source, target_labels, seed, notes, log)
    flags, verdict = report.verdict(dc, mmd, side.priors, side.concept, alpha=alpha, residual=side.residual)
    settings = {"source": str(source), "target": None if target is None else str(target), "model": model_name,
                "control": d.control, "text": text, "label": label, "features": features,
                "run": None if run is None else str(run), "target_labels": target_labels,
                "max_per_domain": max_per_domain, "permutations": permutations, "seed": seed,
                "max_length": max_length, "alpha": alpha, "command": command}
    rep = ShiftReport(d.source_name, d.target_name, model_name, d.control, len(d.source), len(d.target), dc, mmd,
                      side.priors, side.residual, side.concept, flags, verdict, settings, notes, side.source_desc,
                      _projection=_projection(xs, xt, seed))
    rep.seconds = time.perf_counter() - started
    if write:
        rep.path = report.write_folder(rep, path, overwrite)
    return rep
