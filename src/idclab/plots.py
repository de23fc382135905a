"""Figures of a classifier's test results, as matplotlib figures ready to save or log."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from sklearn.metrics import auc, average_precision_score, precision_recall_curve, roc_curve  # noqa: E402

from idclab.metrics import CLASS_NAMES  # noqa: E402


def confusion_matrix_figure(tn: int, fp: int, fn: int, tp: int, threshold: float) -> Figure:
    """Counts and row-normalised shares of the 2x2 confusion matrix."""
    counts = np.array([[tn, fp], [fn, tp]])
    shares = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(4.6, 4))
    ax.imshow(shares, cmap="Blues", vmin=0, vmax=1)
    for (i, j), n in np.ndenumerate(counts):
        ax.text(j, i, f"{n}\n({shares[i, j]:.1%})", ha="center", va="center",
                color="white" if shares[i, j] > 0.5 else "black")
    ax.set_xticks([0, 1], [f"pred {c}" for c in CLASS_NAMES])
    ax.set_yticks([0, 1], [f"true {c}" for c in CLASS_NAMES])
    ax.set_title(f"Confusion matrix (threshold {threshold:.2f})")
    fig.tight_layout()
    return fig


def roc_figure(targets: np.ndarray, probs: np.ndarray) -> Figure:
    """ROC curve with its area."""
    fpr, tpr, _ = roc_curve(targets, probs)
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    ax.plot(fpr, tpr, label=f"AUROC = {auc(fpr, tpr):.3f}")
    ax.plot([0, 1], [0, 1], "k--", lw=0.8, label="chance")
    ax.set(xlabel="False positive rate (1 - specificity)", ylabel="True positive rate (sensitivity)",
           title="ROC curve", xlim=(0, 1), ylim=(0, 1.01))
    ax.legend(loc="lower right")
    fig.tight_layout()
    return fig


def pr_figure(targets: np.ndarray, probs: np.ndarray) -> Figure:
    """Precision-recall curve with average precision and the no-skill line (the positive share)."""
    precision, recall, _ = precision_recall_curve(targets, probs)
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    ax.plot(recall, precision, label=f"AUPRC (AP) = {average_precision_score(targets, probs):.3f}")
    ax.axhline(targets.mean(), color="k", ls="--", lw=0.8, label=f"no skill = {targets.mean():.2f}")
    ax.set(xlabel="Recall (sensitivity)", ylabel="Precision", title="Precision-recall curve",
           xlim=(0, 1), ylim=(0, 1.01))
    ax.legend(loc="lower left")
    fig.tight_layout()
    return fig
