"""Figures of a classifier's test results, as matplotlib figures ready to save or log."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from sklearn.metrics import auc, average_precision_score, precision_recall_curve, roc_curve  # noqa: E402

from idclab.evaluation.heatmaps import slide_heatmap_figure  # noqa: E402, F401  (re-exported)
from idclab.scoring.metrics import CLASS_NAMES, calibration_bins, expected_calibration_error  # noqa: E402


def confusion_matrix_figure(tn: int, fp: int, fn: int, tp: int, threshold: float) -> Figure:
    """Counts and row-normalised shares of the 2x2 confusion matrix."""
    counts = np.array([[tn, fp], [fn, tp]])
    shares = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(4.6, 4.2), layout="constrained")
    ax.imshow(shares, cmap="Blues", vmin=0, vmax=1)
    for (i, j), n in np.ndenumerate(counts):
        ax.text(j, i, f"{n}\n({shares[i, j]:.1%})", ha="center", va="center",
                color="white" if shares[i, j] > 0.5 else "black")
    ax.set_xticks([0, 1], CLASS_NAMES)
    ax.set_yticks([0, 1], CLASS_NAMES, rotation=90, va="center")
    ax.set(xlabel="predicted", ylabel="true")
    ax.set_title(f"Confusion matrix (threshold {threshold:.2f})")
    return fig


def _finish_curve(fig: Figure, ax: plt.Axes, xlabel: str, ylabel: str, title: str, legend: str) -> Figure:
    ax.set(xlabel=xlabel, ylabel=ylabel, title=title, xlim=(0, 1), ylim=(0, 1.01))
    ax.legend(loc=legend, fontsize=8)
    fig.tight_layout()
    return fig


def roc_figure(targets: np.ndarray, probs: np.ndarray, threshold: float) -> Figure:
    """ROC curve with its area and the operating point at `threshold`."""
    fpr, tpr, _ = roc_curve(targets, probs)
    preds = probs >= threshold
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    ax.plot(fpr, tpr, label=f"AUROC = {auc(fpr, tpr):.3f}")
    ax.plot(preds[targets == 0].mean(), preds[targets == 1].mean(), "o", color="C3",
            label=f"operating point (t = {threshold:.2f})")
    ax.plot([0, 1], [0, 1], "k--", lw=0.8, label="chance")
    return _finish_curve(fig, ax, "False positive rate (1 - specificity)", "True positive rate (sensitivity)",
                         "ROC curve", "lower right")


def pr_figure(targets: np.ndarray, probs: np.ndarray, threshold: float) -> Figure:
    """Precision-recall curve with average precision, the no-skill line and the operating point."""
    precision, recall, _ = precision_recall_curve(targets, probs)
    preds = probs >= threshold
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    ax.plot(recall, precision, label=f"AUPRC (AP) = {average_precision_score(targets, probs):.3f}")
    if preds.any():
        ax.plot(preds[targets == 1].mean(), targets[preds].mean(), "o", color="C3",
                label=f"operating point (t = {threshold:.2f})")
    ax.axhline(targets.mean(), color="k", ls="--", lw=0.8, label=f"no skill = {targets.mean():.2f}")
    return _finish_curve(fig, ax, "Recall (sensitivity)", "Precision", "Precision-recall curve", "lower left")


def calibration_figure(targets: np.ndarray, probs: np.ndarray, bins: int = 10) -> Figure:
    """Reliability diagram: observed IDC share against mean predicted P(IDC) per probability bin."""
    edges = np.linspace(0, 1, bins + 1)
    counts, predicted, positives = calibration_bins(targets, probs, bins)
    filled = counts > 0
    confidence, observed = predicted[filled] / counts[filled], positives[filled] / counts[filled]
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    ax.plot([0, 1], [0, 1], "k--", lw=0.8, label="perfect calibration")
    ax.plot(confidence, observed, "o-", label=f"model (ECE = {expected_calibration_error(targets, probs, bins):.3f})")
    ax.bar(edges[:-1], counts / counts.sum(), width=1 / bins, align="edge", alpha=0.2, color="C1",
           label="share of patches")
    ax.set(xlabel="Mean predicted P(IDC)", ylabel="Observed IDC share", title="Reliability diagram",
           xlim=(0, 1), ylim=(0, 1))
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    return fig


def gallery_figure(images: np.ndarray, probs: np.ndarray, captions: list[str], title: str, columns: int = 8
                   ) -> Figure:
    """A grid of patches (N x 50 x 50 x 3 uint8) captioned with P(IDC) and where they come from."""
    rows = max(1, int(np.ceil(len(images) / columns)))
    fig, axes = plt.subplots(rows, columns, figsize=(1.5 * columns, 1.75 * rows + 0.4), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, image, prob, caption in zip(axes.flat, images, probs, captions, strict=False):
        ax.imshow(image)
        ax.set_title(f"P={prob:.2f}\n{caption}", fontsize=6)
    fig.suptitle(title if len(images) else f"{title}: none", fontsize=10)
    fig.tight_layout()
    return fig
