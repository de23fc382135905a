"""Spatial context: a patch's P(IDC) blended with its neighbours' on the same slide.

IDC is annotated as regions, so adjacent patches of a patient mostly share a label (95% of the 8-neighbour
pairs in the pool do). Each patch's probability becomes `(1 - weight) * p + weight * mean(neighbours' p)`,
neighbours being the patient's other patches within `radius` patch steps (Chebyshev distance, from the
coordinates in the Kaggle file names). The weight is tuned on the validation patients; the threshold is then
tuned on the smoothed validation probabilities, the conditions it is used in.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # scipy and scikit-learn are imported where used: reading MAX_RADIUS or PATCH_STEP stays light
    from scipy.sparse import csr_matrix

PATCH_STEP = 50  # pixels between adjacent patches in the Kaggle coordinates
MAX_RADIUS = 5  # patch steps: 120 neighbours at most (a saved radius beyond it is refused)
WEIGHTS = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)  # candidates tuned on validation


def neighbour_matrix(patients: np.ndarray, xs: np.ndarray, ys: np.ndarray, radius: int = 1) -> csr_matrix:
    """Row-normalised adjacency: entry (i, j) is 1/deg(i) when j is a patch of i's patient within `radius` patch
    steps in x and y, at another position (a duplicate of a patch is not its neighbour, so a slide listed twice
    gives the same means); rows of patches without neighbours are empty."""
    if not 1 <= radius <= MAX_RADIUS:
        raise ValueError(f"context.radius must be 1 to {MAX_RADIUS} patches, got {radius!r}")
    n = len(patients)
    _, codes = np.unique(np.asarray(patients).astype(str), return_inverse=True)
    reach = radius * PATCH_STEP
    apart = 2 * (max(np.abs(xs).max(initial=0), np.abs(ys).max(initial=0)) + reach) + 1  # > any in-slide distance
    points = np.column_stack([xs, ys, codes * apart]).astype(float)
    from scipy.sparse import coo_matrix
    from scipy.spatial import cKDTree

    pairs = cKDTree(points).query_pairs(reach + 0.5, p=np.inf, output_type="ndarray")
    pairs = pairs[(points[pairs[:, 0]] != points[pairs[:, 1]]).any(axis=1)]  # a copy at the same place is no neighbour
    i, j = np.concatenate([pairs[:, 0], pairs[:, 1]]), np.concatenate([pairs[:, 1], pairs[:, 0]])
    return row_normalised(coo_matrix((np.ones(len(i)), (i, j)), shape=(n, n)).tocsr())


def row_normalised(adjacency: csr_matrix) -> csr_matrix:
    """Each row divided by its sum (a neighbour's weight is 1/deg); an empty row stays empty."""
    degree = np.asarray(adjacency.sum(axis=1)).ravel()
    from scipy.sparse import diags

    return diags(np.divide(1.0, degree, out=np.zeros(len(degree)), where=degree > 0)) @ adjacency


def smooth(probs: np.ndarray, neighbours: csr_matrix, weight: float) -> np.ndarray:
    """`(1 - weight) * p + weight * mean(neighbours' p)`; a patch without neighbours keeps its p."""
    probs = np.asarray(probs, dtype=float)
    has_neighbours = np.asarray(neighbours.sum(axis=1)).ravel() > 0
    blended = (1 - weight) * probs + weight * (neighbours @ probs)
    return np.where(has_neighbours, blended, probs)


def tune_weight(targets: np.ndarray, probs: np.ndarray, neighbours: csr_matrix,
                weights: Sequence[float] = WEIGHTS) -> float:
    """The weight in `weights` whose smoothed probabilities have the highest average precision (AUPRC); the
    first (smallest) on ties, and 0 when `targets` hold a single class."""
    if not weights or any(not 0 <= w < 1 for w in weights):
        raise ValueError(f"context weights must be in [0, 1), got {list(weights)!r}")
    if len(np.unique(targets)) < 2:
        return 0.0
    from sklearn.metrics import average_precision_score

    scores = [average_precision_score(targets, smooth(probs, neighbours, w)) for w in weights]
    return float(weights[int(np.argmax(scores))])
