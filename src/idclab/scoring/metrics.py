"""Binary classification metrics (torchmetrics) and the per-class report."""

from __future__ import annotations

import json
from typing import Any, NamedTuple

import numpy as np
import torch
from imblearn.metrics import classification_report_imbalanced
from sklearn.metrics import classification_report, matthews_corrcoef
from torch import nn
from torchmetrics import Metric
from torchmetrics.functional import classification as F
from torchmetrics.utilities import dim_zero_cat

CLASS_NAMES = ("non-IDC (0)", "IDC (1)")


class Concatenated(Metric):
    """Tensors concatenated over an epoch, kept in their dtype (and gathered across processes under DDP)."""

    full_state_update = False

    def __init__(self, kind: torch.dtype):
        super().__init__()
        self.kind = kind
        self.add_state("values", default=[], dist_reduce_fx="cat")

    def update(self, values: torch.Tensor) -> None:
        self.values.append(values.detach().flatten().to(self.kind))

    def compute(self) -> torch.Tensor:
        if isinstance(self.values, list) and not self.values:
            return torch.empty(0, dtype=self.kind, device=self.device)
        return dim_zero_cat(self.values).to(self.kind)


class Epoch(NamedTuple):
    """What a stage saw in one epoch: P(IDC), integer targets, each patch's index row, and logits (if kept)."""

    probs: torch.Tensor
    targets: torch.Tensor
    rows: torch.Tensor
    logits: torch.Tensor | None


class BinaryMetrics(nn.Module):
    """Accumulates probabilities, targets and row indices over an epoch; `compute` gives every reported metric.

    Updates only gather the batch (cheap on the training hot path; gathered across processes under
    DDP); the metrics are computed once per epoch with torchmetrics' functional API. Threshold-based
    metrics use `threshold`; AUROC and AUPRC (average precision) use the probabilities. Balanced accuracy
    and macro-F1 are derived from the confusion matrix. With `unique_rows` (validation, test) every patch
    counts once, in row order, whatever a distributed sampler repeated to even out the processes.
    """

    def __init__(self, threshold: float = 0.5, unique_rows: bool = False):
        super().__init__()
        self.threshold = threshold
        self.unique_rows = unique_rows
        self.probs = Concatenated(torch.float32)
        self.targets = Concatenated(torch.long)
        self.rows = Concatenated(torch.long)
        self.logits = Concatenated(torch.float32)

    def update(self, probs: torch.Tensor, targets: torch.Tensor, rows: torch.Tensor,
               logits: torch.Tensor | None = None) -> None:
        self.probs.update(probs.float())
        self.targets.update(targets)
        self.rows.update(rows)
        if logits is not None:
            self.logits.update(logits.float())

    def gathered(self) -> Epoch:
        """Everything seen since the last reset (once per row with `unique_rows`)."""
        # flatten: torchmetrics squeezes a one-element result to a scalar
        logits = self.logits.compute().flatten() if self.logits.update_count else None
        epoch = Epoch(self.probs.compute().flatten(), self.targets.compute().flatten(), self.rows.compute().flatten(),
                      logits)
        if not self.unique_rows:
            return epoch
        rows, inverse = torch.unique(epoch.rows, return_inverse=True)
        positions = torch.arange(len(inverse), device=inverse.device)
        first = torch.full_like(rows, len(inverse)).scatter_reduce(0, inverse, positions, "amin")
        return Epoch(epoch.probs[first], epoch.targets[first], rows, None if logits is None else logits[first])

    def compute(self) -> dict[str, float]:
        epoch = self.gathered()
        return binary_metrics(epoch.probs, epoch.targets, self.threshold)

    def reset(self) -> None:
        for values in (self.probs, self.targets, self.rows, self.logits):
            values.reset()


def binary_metrics(probs: torch.Tensor, targets: torch.Tensor, threshold: float = 0.5) -> dict[str, float]:
    """Every per-epoch metric of probabilities `probs` against integer `targets` at `threshold`.

    A patch is IDC when P >= threshold, as in prediction and the reports (torchmetrics' own thresholding is
    P > threshold, which would call negative the very patch a tuned threshold was taken from)."""
    labels = (probs >= threshold).float()
    values = {
        "accuracy": F.binary_accuracy(labels, targets),
        "precision": F.binary_precision(labels, targets),
        "recall": F.binary_recall(labels, targets),
        "specificity": F.binary_specificity(labels, targets),
        "f1": F.binary_f1_score(labels, targets),
        "auroc": F.binary_auroc(probs, targets),
        "auprc": F.binary_average_precision(probs, targets),
    }
    values = {name: float(value) for name, value in values.items()}
    (tn, fp), (fn, tp) = F.binary_confusion_matrix(labels, targets).tolist()
    values.update(confusion_counts(tn, fp, fn, tp))
    return values


def imbalance_metrics(targets: np.ndarray, probs: np.ndarray, threshold: float) -> tuple[str, dict[str, float]]:
    """imbalanced-learn's report (sensitivity, specificity, geometric mean, index balanced accuracy per
    class) as text, plus those values for the IDC class and the Matthews correlation coefficient."""
    preds = (probs >= threshold).astype(int)
    kwargs = {"labels": [0, 1], "target_names": list(CLASS_NAMES)}
    text = classification_report_imbalanced(targets, preds, digits=4, **kwargs)
    table = classification_report_imbalanced(targets, preds, output_dict=True, **kwargs)
    positive = table[CLASS_NAMES[1]]
    values = {"sensitivity": positive["rec"], "specificity": positive["spe"], "gmean": positive["geo"],
              "iba": positive["iba"], "mcc": matthews_corrcoef(targets, preds)}
    return text, {k: float(v) for k, v in values.items()}


class RankedPatches:
    """Patches ranked once by P(IDC), so that the AUROC under any weighting of them (a bootstrap draw) costs two
    bincounts rather than a sort: sklearn's `roc_auc_score(targets, probs, sample_weight=weights)`, ties counting
    half, for a small part of the time."""

    def __init__(self, targets: np.ndarray, probs: np.ndarray):
        missing = int(np.isnan(probs).sum())
        if missing:  # NaN would rank above every probability and tie with itself: refused, as sklearn does
            raise ValueError(f"P(IDC) is NaN for {missing} patch(es): no AUROC")
        levels, self.level_of = np.unique(probs, return_inverse=True)
        self.levels = len(levels)
        self.positive = np.asarray(targets) == 1

    def auroc(self, weights: np.ndarray) -> float:
        """The share of weighted positive-negative pairs ranked right (NaN when either class weighs nothing)."""
        positive = np.bincount(self.level_of, weights * self.positive, self.levels)
        negative = np.bincount(self.level_of, weights * ~self.positive, self.levels)
        pairs = positive.sum() * negative.sum()
        if pairs == 0:
            return float("nan")
        below = np.cumsum(negative) - negative
        return float(positive @ (below + 0.5 * negative) / pairs)


def patient_bootstrap(targets: np.ndarray, probs: np.ndarray, patients: np.ndarray, threshold: float,
                      resamples: int = 1000, seed: int = 0) -> dict[str, tuple[float, float]]:
    """95% percentile intervals of F1, balanced accuracy and AUROC, resampling patients (not patches).

    Each resample draws patients with replacement; a patch counts as many times as its patient was drawn. A draw
    without both classes counts for no metric (its recall or specificity is undefined).
    """
    names, patient_of = np.unique(patients, return_inverse=True)
    rng = np.random.default_rng(seed)
    preds = probs >= threshold
    cells = {"tp": preds & (targets == 1), "fp": preds & (targets == 0),
             "fn": ~preds & (targets == 1), "tn": ~preds & (targets == 0)}
    per_patient = {k: np.bincount(patient_of, weights=v, minlength=len(names)) for k, v in cells.items()}
    ranked = RankedPatches(targets, probs)
    samples: dict[str, list[float]] = {"f1": [], "balanced_accuracy": [], "auroc": []}
    for _ in range(resamples):
        draws = np.bincount(rng.integers(0, len(names), len(names)), minlength=len(names))
        tp, fp, fn, tn = (float(draws @ per_patient[k]) for k in ("tp", "fp", "fn", "tn"))
        if not (tp + fn and tn + fp):
            continue
        samples["f1"].append(_ratio(2 * tp, 2 * tp + fp + fn))
        samples["balanced_accuracy"].append(confusion_counts(tn, fp, fn, tp)["balanced_accuracy"])
        samples["auroc"].append(ranked.auroc(draws[patient_of]))
    return {name: (float(np.percentile(v, 2.5)), float(np.percentile(v, 97.5))) if v else (float("nan"),) * 2
            for name, v in samples.items()}


def interval_lines(values: dict[str, float], intervals: dict[str, tuple[float, float]], prefix: str) -> str:
    """One line per metric: `name  value  [low, high]`, the value read from `values[prefix + name]`."""
    return "\n".join(f"  {name:<18} {values[f'{prefix}{name}']:.4f}  [{low:.4f}, {high:.4f}]"
                     for name, (low, high) in intervals.items())


def calibration_bins(targets: np.ndarray, probs: np.ndarray, bins: int = 10
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per equal-width probability bin: patch count, summed P(IDC) and summed IDC labels."""
    which = np.clip(np.digitize(probs, np.linspace(0, 1, bins + 1)[1:-1]), 0, bins - 1)
    return (np.bincount(which, minlength=bins), np.bincount(which, probs, bins),
            np.bincount(which, targets, bins))


def expected_calibration_error(targets: np.ndarray, probs: np.ndarray, bins: int = 10) -> float:
    """ECE: the patch-weighted mean gap between predicted P(IDC) and the observed IDC share, per bin."""
    counts, predicted, observed = calibration_bins(targets, probs, bins)
    return float(np.abs(predicted - observed).sum() / max(counts.sum(), 1))


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
