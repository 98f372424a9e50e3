"""`exapt compare`: which way of transferring works for a data set, and how many labels it needs.

    panel.py     which cells (strategy x n per class x seed) and in what order
    runner.py    runs them in one process, sharing data, model and feature caches; resumable
    tracking.py  logs each cell to MLflow
    analysis.py  summaries, transfer gain, labels saved
    recommendation.py  the pick, and the reasons for it
    report.py    report.html (self-contained figures) and report.md
"""
from .runner import Comparison, compare, compare_config

__all__ = ["compare", "compare_config", "Comparison"]
