"""Domain adaptation: a labelled source domain, an unlabelled (or few-labelled) target.

    exapt fit mnist-8x8 --model mlp --strategy full --adapt-to optdigits --penalty dann

- target.py: the target domain, split into unlabelled rows, a target test set and (with
  --target-labels) a few labelled rows for model selection;
- in_fit.py: what fit does with all of that, and which validation chose the model.
Below the plug-ins: estimators/density.py (density ratios p_target(x)/p_source(x) from a
domain classifier: importance weights, importance-weighted validation) and
train/target_stream.py (the target batch drawn beside each source batch: dann, coral, mmd).
The penalties themselves live with the others: penalties/alignment.py (coral, mmd),
penalties/dann.py, penalties/reweight.py (importance-weights, label-shift).
"""
