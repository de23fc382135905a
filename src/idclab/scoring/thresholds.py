"""Choosing the decision threshold on the validation split, chosen by the `threshold` config group."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

METHODS = ("fixed", "max_f1", "youden", "sensitivity")


def rule_of(threshold_cfg: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    """A `threshold` config group as (method, the keyword options of `tune_threshold`)."""
    return str(threshold_cfg["name"]), {k: v for k, v in threshold_cfg.items() if k != "name"}


def tune_threshold(targets: np.ndarray, probs: np.ndarray, method: str, value: float = 0.5,
                   target_sensitivity: float = 0.9) -> float:
    """The operating threshold for `method`.

    - fixed: `value`;
    - max_f1: the threshold with the highest F1 of the positive class;
    - youden: the threshold maximising Youden's J = sensitivity + specificity - 1;
    - sensitivity: the highest threshold whose sensitivity is at least `target_sensitivity`.
    Methods that need both classes fall back to `value` when the split has only one.
    """
    if method not in METHODS:
        raise ValueError(f"threshold.name must be one of {METHODS}, got {method!r}")
    if method == "sensitivity" and not 0 < target_sensitivity <= 1:
        raise ValueError(f"threshold.target_sensitivity must be in (0, 1], got {target_sensitivity!r}")
    if method == "fixed" or len(np.unique(targets)) < 2:
        return float(value)
    if method == "max_f1":
        from sklearn.metrics import precision_recall_curve  # here: reading METHODS stays light

        precision, recall, thresholds = precision_recall_curve(targets, probs)
        f1 = 2 * precision * recall / np.maximum(precision + recall, 1e-12)
        return float(thresholds[int(np.argmax(f1[:-1]))])
    if method == "sensitivity":
        return highest_threshold_reaching(targets, probs, target_sensitivity)
    from sklearn.metrics import roc_curve

    fpr, tpr, thresholds = roc_curve(targets, probs)
    finite = np.isfinite(thresholds)
    return float(thresholds[finite][int(np.argmax((tpr - fpr)[finite]))])


def highest_threshold_reaching(targets: np.ndarray, probs: np.ndarray, target: float) -> float:
    """The highest threshold t with sensitivity (share of positives with P >= t) at least `target`:
    the k-th highest positive probability, k the fewest positives reaching the target."""
    positives = np.sort(np.asarray(probs)[np.asarray(targets) == 1])[::-1]
    reached = np.arange(1, len(positives) + 1) / len(positives) >= target
    return float(positives[int(np.argmax(reached))])
