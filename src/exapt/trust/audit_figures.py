"""The audit's ROC figure: log-log axes, where the low-FPR regime that matters is visible
(Carlini et al. 2022 argue AUC hides it)."""
from __future__ import annotations

import numpy as np

from ..figures import png_bytes


def roc_figure(curves: dict, title: str) -> bytes:
    import matplotlib  # heavy: imported on first use

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # heavy: imported on first use

    fig, ax = plt.subplots(figsize=(4.6, 4.2))
    floor = 1.0 / max(c["n_out"] for c in curves.values())
    for name, c in curves.items():
        fpr, tpr = np.maximum(c["fpr"], floor / 2), np.maximum(c["tpr"], floor / 2)
        ax.plot(fpr, tpr, label=f"{name} (AUC {c['auc']:.3f})")
    ax.plot([floor / 2, 1], [floor / 2, 1], "k--", lw=0.8, label="chance")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.set_title(f"membership inference: {title}", fontsize=9)
    ax.legend(fontsize=8, loc="lower right")
    return png_bytes(fig, tight=True)
