"""Model selection: transferability scores that rank pretrained models before fine-tuning.

    from exapt.select import SCORES, logme, weighted_kendall_tau
    logme(features, labels)                      # higher = more transferable
    SCORES["h-score"](features, labels, "classification")

See `exapt.select.scores` (and closed_form.py for LogME and H-score) for the formulas and the
papers they come from.
"""
from .scores import (
                     FEATURE_SCORE_TASKS,
                     SCORES,
                     SOURCE_SCORE_TASKS,
                     SOURCE_SCORES,
                     TASKS,
                     LogMEResult,
                     ScoreInputError,
                     h_score,
                     kendall_tau,
                     knn_accuracy,
                     leep,
                     linear_probe_cv,
                     logme,
                     logme_fit,
                     nce,
                     weighted_kendall_tau,
)

__all__ = ["SCORES", "SOURCE_SCORES", "FEATURE_SCORE_TASKS", "SOURCE_SCORE_TASKS", "TASKS", "ScoreInputError",
           "LogMEResult", "logme", "logme_fit", "leep", "nce", "h_score", "knn_accuracy", "linear_probe_cv",
           "kendall_tau", "weighted_kendall_tau"]
