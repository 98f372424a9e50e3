"""`exapt shift`: is there a gap between two domains, and of what kind?

    from exapt.shift import diagnose
    rep = diagnose("tweets-airline", "tweets-self-driving")          # text: minilm-l6 features
    rep = diagnose("digits", control=True, out="runs/shift-control")  # two random halves: no shift
    print(rep.verdict)            # one sentence in plain words
    rep.domain.auc, rep.domain.ci # covariate shift: domain classifier AUC and its DeLong CI
    rep.mmd.p_value               # covariate shift: MMD permutation test
    rep.priors.bbse, rep.priors.em   # label shift: target priors without target labels
    rep.concept.table             # concept shift: per-class recall, source model vs target probe

Modules: `source_model` (the cross-fitted probe or a run), `concept` (target probes),
`domains` (loading, subsampling, features), `report` (verdict, figures, folder), `cli`;
the statistics themselves live in `exapt.estimators` (covariate: domain classifier,
DeLong, MMD; label_shift: BBSE, EM; probes), which fit's adaptation uses too.
"""
from .diagnose import ShiftReport, diagnose

__all__ = ["ShiftReport", "diagnose"]
