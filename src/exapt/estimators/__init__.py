"""Estimators on feature arrays, shared by the commands and the plug-ins: no model, no run.

    covariate.py    domain classifier (out-of-fold AUC, DeLong interval), MMD permutation test
    label_shift.py  target class priors without target labels (BBSE, EM), posterior adjustment
    probes.py       logistic-regression probes; the cross-fitted source probe
    density.py      density ratios p_target(x) / p_source(x) from a domain classifier

`exapt shift` reports them; `fit --adapt-to` and the reweighting penalties train with them.
"""
