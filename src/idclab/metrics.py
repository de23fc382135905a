"""Binary classification metrics (torchmetrics) and the per-class report."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import torch
from sklearn.metrics import classification_report
from torch import nn
from torchmetrics import MetricCollection
from torchmetrics.classification import (
    BinaryAccuracy,
    BinaryAUROC,
    BinaryAveragePrecision,
    BinaryConfusionMatrix,
    BinaryF1Score,
    BinaryPrecision,
    BinaryRecall,
    BinarySpecificity,
)

CLASS_NAMES = ("non-IDC (0)", "IDC (1)")


class BinaryMetrics(nn.Module):
    """Accumulates probabilities and targets over an epoch; `compute` gives every reported metric.

    Threshold-based metrics use `threshold`; AUROC and AUPRC (average precision) use the
    probabilities. Balanced accuracy and macro-F1 are derived from the confusion matrix.
    """

    def __init__(self, threshold: float = 0.5):
        super().__init__()
        self.scores = MetricCollection({
            "accuracy": BinaryAccuracy(threshold),
            "precision": BinaryPrecision(threshold),
            "recall": BinaryRecall(threshold),
            "specificity": BinarySpecificity(threshold),
            "f1": BinaryF1Score(threshold),
            "auroc": BinaryAUROC(),
            "auprc": BinaryAveragePrecision(),
        })
        self.confusion = BinaryConfusionMatrix(threshold)

    def update(self, probs: torch.Tensor, targets: torch.Tensor) -> None:
        targets = targets.long()
        self.scores.update(probs, targets)
        self.confusion.update(probs, targets)

    def compute(self) -> dict[str, float]:
        values = {name: float(value) for name, value in self.scores.compute().items()}
        (tn, fp), (fn, tp) = self.confusion.compute().tolist()
        values.update(confusion_counts(tn, fp, fn, tp))
        return values

    def reset(self) -> None:
        self.scores.reset()
        self.confusion.reset()


def _ratio(num: float, den: float) -> float:
    return num / den if den else 0.0


def confusion_counts(tn: int, fp: int, fn: int, tp: int) -> dict[str, float]:
    """The confusion matrix cells plus balanced accuracy and macro-F1 derived from them."""
    recall_pos, recall_neg = _ratio(tp, tp + fn), _ratio(tn, tn + fp)
    f1_pos = _ratio(2 * tp, 2 * tp + fp + fn)
    f1_neg = _ratio(2 * tn, 2 * tn + fn + fp)
    return {"tn": tn, "fp": fp, "fn": fn, "tp": tp,
            "balanced_accuracy": (recall_pos + recall_neg) / 2, "macro_f1": (f1_pos + f1_neg) / 2}


def report(targets: np.ndarray, probs: np.ndarray, threshold: float = 0.5) -> tuple[str, dict[str, Any]]:
    """Precision, recall, F1 and support per class, as text and as a JSON-ready dict."""
    preds = (probs >= threshold).astype(int)
    kwargs = {"labels": [0, 1], "target_names": list(CLASS_NAMES), "zero_division": 0}
    text = classification_report(targets, preds, digits=4, **kwargs)
    as_dict = classification_report(targets, preds, output_dict=True, **kwargs)
    as_dict["threshold"] = threshold
    return text, json.loads(json.dumps(as_dict))
