"""A slide's P(IDC) heatmap, rebuilt from its patches: matplotlib alone (prediction draws one per patient of the
files it scored without importing the test report's metrics)."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.image import AxesImage  # noqa: E402

HEAT = {"cmap": "magma", "vmin": 0, "vmax": 1}
OVERLAY = "P(IDC) over tissue"


def overlay_probabilities(ax: plt.Axes, tissue: np.ndarray, predicted: np.ndarray) -> AxesImage:
    """The tissue with P(IDC) per patch on top (turbo: it stands out from H&E pinks), more opaque where higher,
    so the tissue stays visible where IDC is unlikely."""
    ax.imshow(tissue)
    alpha = 0.15 + 0.55 * np.nan_to_num(predicted)
    return ax.imshow(predicted, alpha=alpha, extent=(0, tissue.shape[1], tissue.shape[0], 0), interpolation="nearest",
                     cmap="turbo", vmin=0, vmax=1)


def slide_heatmap_figure(images: np.ndarray, xs: np.ndarray, ys: np.ndarray, probs: np.ndarray,
                         targets: np.ndarray | None, threshold: float, title: str) -> Figure:
    """Rebuild a slide from its patches (Kaggle x, y are 1-based pixel offsets) and show side by side the
    tissue, the ground-truth IDC map, the predicted P(IDC) map, P(IDC) over the tissue and the thresholded errors."""
    cols, rows = (xs - 1) // 50, (ys - 1) // 50
    width, height = cols.max() + 1, rows.max() + 1
    tissue = np.full((height * 50, width * 50, 3), 255, np.uint8)
    for image, c, r in zip(images, cols, rows, strict=True):
        tissue[r * 50:(r + 1) * 50, c * 50:(c + 1) * 50] = image
    predicted = np.full((height, width), np.nan)
    predicted[rows, cols] = probs
    panels = [("tissue", tissue, {}), ("predicted P(IDC)", predicted, HEAT), (OVERLAY, predicted, {})]
    if targets is not None:
        truth = np.full((height, width), np.nan)
        truth[rows, cols] = targets
        errors = np.full((height, width, 3), 1.0)
        preds = probs >= threshold
        colours = {(1, 1): (0.55, 0.55, 0.55), (0, 0): (0.85, 0.85, 0.85), (1, 0): (0.85, 0.1, 0.1),
                   (0, 1): (0.1, 0.3, 0.9)}  # (pred, truth): TP grey, TN light, FP red, FN blue
        for (p, t), colour in colours.items():
            chosen = (preds == p) & (targets == t)
            errors[rows[chosen], cols[chosen]] = colour
        panels.insert(1, ("ground truth IDC", truth, HEAT))
        panels.append((f"errors at t={threshold:.2f}: FP red, FN blue", errors, {}))
    fig, axes = plt.subplots(1, len(panels), figsize=(3.6 * len(panels), 3.8 * height / max(width, 1) + 0.8))
    for ax, (name, picture, style) in zip(np.atleast_1d(axes), panels, strict=True):
        if name == OVERLAY:
            shown = overlay_probabilities(ax, tissue, picture)
        else:
            shown = ax.imshow(picture, interpolation="nearest", **style)
        ax.set_title(name, fontsize=9)
        ax.axis("off")
        if name.startswith("predicted") or name == OVERLAY:
            fig.colorbar(shown, ax=ax, fraction=0.046, pad=0.02)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig
