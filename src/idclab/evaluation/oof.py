"""Out-of-fold reports of a cross-validation: pooled metrics with patient-bootstrap intervals, threshold rules and
spatial context compared on the same fold models, per-patient errors, and the fold ensemble's operating point."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from scipy.sparse import csr_matrix
from sklearn.metrics import average_precision_score, roc_auc_score

from idclab.data.datamodule import PreparedData
from idclab.evaluation.plots import pr_figure, roc_figure
from idclab.evaluation.reporting import threshold_free
from idclab.fileutil import save_figure, whole_file, write_json, write_text
from idclab.scoring.context import neighbour_matrix, smooth, tune_weight
from idclab.scoring.metrics import binary_metrics, imbalance_metrics, interval_lines, patient_bootstrap, report
from idclab.scoring.thresholds import METHODS, tune_threshold


def pooled_metrics(targets: np.ndarray, probs: np.ndarray, thresholds: np.ndarray) -> dict[str, float]:
    """Metrics of pooled out-of-fold predictions, each patch labelled at its own fold's threshold."""
    shifted = np.clip(0.5 + (probs - thresholds) / 2, 0, 1)  # >= 0.5 exactly where probs >= threshold
    values = binary_metrics(torch.from_numpy(shifted), torch.from_numpy(targets), 0.5)
    values["auroc"] = float(roc_auc_score(targets, probs))
    values["auprc"] = float(average_precision_score(targets, probs))
    return values


RULES: dict[str, tuple[str, dict[str, Any]]] = {method: (method, {}) for method in METHODS}  # tune_threshold's
# defaults: fixed 0.5, max-F1, Youden, sensitivity 0.9


def threshold_rules(val: pd.DataFrame, oof: pd.DataFrame, rules: dict[str, tuple[str, dict[str, Any]]] = RULES
                    ) -> pd.DataFrame:
    """Each threshold rule (label -> method and options) tuned on every fold's validation predictions and applied
    to that fold's out-of-fold patches: pooled F1, balanced accuracy, sensitivity and specificity per rule, on
    the same models. `val` and `oof` have columns fold, target, probability.
    """
    missing = set(oof["fold"]) - set(val["fold"])
    if missing:
        raise ValueError(f"no validation predictions for fold(s) {sorted(missing)}: cannot tune their threshold")
    rows = []
    for label, (method, options) in rules.items():
        thresholds = {fold: tune_threshold(group["target"].to_numpy(), group["probability"].to_numpy(), method,
                                           **options) for fold, group in val.groupby("fold")}
        at = oof["fold"].map(thresholds).to_numpy()
        values = pooled_metrics(oof["target"].to_numpy().astype(int), oof["probability"].to_numpy(), at)
        rows.append({"rule": label, "threshold_mean": float(np.mean(list(thresholds.values()))),
                     **{k: values[k] for k in ("f1", "balanced_accuracy", "recall", "specificity")}})
    return pd.DataFrame(rows).rename(columns={"recall": "sensitivity"})


CONTEXT_RADII = (1, 2)  # spatial context compared on the same fold models: none, then these radii (in patches)
MatrixBuilder = Callable[[pd.DataFrame], csr_matrix]  # a frame of patches -> its row-normalised neighbour weights


def radius_neighbours(radius: int) -> MatrixBuilder:
    """The builder of `neighbour_matrix` at `radius` for a frame with columns patient, x, y."""
    def build(frame: pd.DataFrame) -> csr_matrix:
        return neighbour_matrix(frame["patient"].to_numpy(), frame["x"].to_numpy(), frame["y"].to_numpy(), radius)
    return build


CONTEXTS: dict[str, tuple[MatrixBuilder, ...]] = {
    "none": (), **{f"radius {radius}": (radius_neighbours(radius),) for radius in CONTEXT_RADII}}


def blend_tuned(frame: pd.DataFrame, probs: np.ndarray, steps: Sequence[MatrixBuilder]
                ) -> tuple[np.ndarray, list[float]]:
    """`probs` of `frame`'s patches blended step by step, each step's weight tuned (`tune_weight`) on the blend
    of the steps before it; the blend and the weights."""
    targets, weights = frame["target"].to_numpy().astype(int), []
    for build in steps:
        neighbours = build(frame)
        weights.append(tune_weight(targets, probs, neighbours))
        probs = smooth(probs, neighbours, weights[-1])
    return probs, weights


def blend_at(frame: pd.DataFrame, probs: np.ndarray, steps: Sequence[MatrixBuilder], weights: Sequence[float]
             ) -> np.ndarray:
    """`probs` of `frame`'s patches blended step by step at the given weights."""
    for build, weight in zip(steps, weights, strict=True):
        probs = smooth(probs, build(frame), weight)
    return probs


def context_rules(val: pd.DataFrame, oof: pd.DataFrame, rule: tuple[str, dict[str, Any]],
                  contexts: Mapping[str, Sequence[MatrixBuilder]] = CONTEXTS) -> pd.DataFrame:
    """Spatial context compared on the same fold models: for each context (no context, then each radius), the
    context weights (`blend_tuned`) and then the threshold (`rule`) tuned on every fold's validation predictions,
    and applied to that fold's out-of-fold patches (blended with their neighbours among them). `val` and `oof`
    have columns fold, patient, x, y, target and the patches' own P(IDC) in `patch_probability` (or
    `probability`). Pooled AUROC, AUPRC, F1, balanced accuracy, sensitivity and specificity per row, the fold
    mean of each step's weight (`weight_mean`, then `weight_mean_2`, ... for contexts of several steps), and the
    validation evidence `val_crossfit_auroc`/`_auprc` (see `cross_fitted`) to choose a context by.
    """
    method, options = rule
    column = "patch_probability" if "patch_probability" in oof else "probability"
    val_targets_all = val["target"].to_numpy().astype(int)
    rows = []
    for name, steps in contexts.items():
        probs, thresholds, weights = np.zeros(len(oof)), np.zeros(len(oof)), []
        for fold, fold_oof in oof.groupby("fold"):
            fold_val = val[val["fold"] == fold]
            val_probs, fold_weights = blend_tuned(fold_val, fold_val[column].to_numpy(dtype=float), steps)
            at = np.flatnonzero(oof["fold"].to_numpy() == fold)
            probs[at] = blend_at(fold_oof, fold_oof[column].to_numpy(dtype=float), steps, fold_weights)
            thresholds[at] = tune_threshold(fold_val["target"].to_numpy().astype(int), val_probs, method, **options)
            weights.append(fold_weights)
        step_means = np.mean(weights, axis=0) if steps else [0.0]
        values = pooled_metrics(oof["target"].to_numpy().astype(int), probs, thresholds)
        crossfit = threshold_free(val_targets_all, cross_fitted(val, column, steps))
        rows.append({"context": name,
                     **{"weight_mean" + (f"_{k + 1}" if k else ""): float(m) for k, m in enumerate(step_means)},
                     **{f"val_crossfit_{k}": v for k, v in crossfit.items()},
                     **{k: values[k] for k in ("auroc", "auprc", "f1", "balanced_accuracy", "recall", "specificity")}})
    return pd.DataFrame(rows).rename(columns={"recall": "sensitivity"})


def validation_halves(val: pd.DataFrame) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """For each fold, twice: boolean masks over `val`'s rows of one half of that fold's validation patients (the
    half scored) and of the other half (the half tuned on). Halves: alternate patients in sorted order."""
    folds, patients = val["fold"].to_numpy(), val["patient"].to_numpy().astype(str)
    for fold in np.unique(folds):
        names = np.unique(patients[folds == fold])
        first = (folds == fold) & np.isin(patients, names[::2])
        second = (folds == fold) & ~first
        for scored, tuned_on in ((first, second), (second, first)):
            if scored.any():
                yield scored, tuned_on


def cross_fitted(val: pd.DataFrame, column: str, steps: Sequence[MatrixBuilder]) -> np.ndarray:
    """Each fold's validation probabilities blended (`steps`) at the weights tuned on the other half of that
    fold's validation patients (`validation_halves`), so that what spatial context buys is measured on patients
    its weights were not tuned on."""
    probs, out = val[column].to_numpy(dtype=float), val[column].to_numpy(dtype=float).copy()
    for scored, tuned_on in validation_halves(val):
        _, weights = blend_tuned(val[tuned_on], probs[tuned_on], steps)
        out[scored] = blend_at(val[scored], probs[scored], steps, weights)
    return out


def patient_table(predictions: pd.DataFrame) -> pd.DataFrame:
    """Per out-of-fold patient: patches, IDC share, mean P(IDC), misclassified patches at its fold's threshold
    (false negatives, false positives) and its own AUROC (NaN for a single-class patient); most errors first."""
    rows = []
    for patient, group in predictions.groupby("patient", sort=False):
        targets, probs = group["target"].to_numpy().astype(int), group["probability"].to_numpy()
        labels = probs >= group["threshold"].to_numpy()
        rows.append({"patient": patient, "fold": int(group["fold"].iloc[0]), "patches": len(group),
                     "idc_share": float(targets.mean()), "mean_probability": float(probs.mean()),
                     "errors": int((labels != targets).sum()), "false_negatives": int((~labels & (targets == 1)).sum()),
                     "false_positives": int((labels & (targets == 0)).sum()),
                     "auroc": float(roc_auc_score(targets, probs)) if len(np.unique(targets)) == 2 else float("nan")})
    return pd.DataFrame(rows).sort_values(["errors", "patches"], ascending=[False, False], ignore_index=True)


def oof_report(folds: pd.DataFrame, predictions: pd.DataFrame, val: pd.DataFrame, out_dir: Path, resamples: int,
               rules: dict[str, tuple[str, dict[str, Any]]] = RULES) -> tuple[dict[str, float], str]:
    """The pooled out-of-fold report (text, metrics with 95% patient-bootstrap intervals), fold mean ± std and
    the threshold `rules` compared on the same fold models (`val`: each fold's validation predictions)."""
    targets = predictions["target"].to_numpy().astype(int)
    probs = predictions["probability"].to_numpy()
    thresholds = predictions["threshold"].to_numpy()
    patients = predictions["patient"].to_numpy()
    metrics = {f"oof_{k}": v for k, v in pooled_metrics(targets, probs, thresholds).items()}
    labels = (probs >= thresholds).astype(float)  # each patch at its fold's threshold
    class_text, _ = report(targets, labels, 0.5)
    imbalance_text, imbalance = imbalance_metrics(targets, labels, 0.5)
    metrics |= {f"oof_{k}": v for k, v in imbalance.items()}
    intervals = patient_bootstrap(targets, probs, patients, thresholds, resamples)
    for name, (low, high) in intervals.items():
        metrics |= {f"oof_{name}_ci_low": low, f"oof_{name}_ci_high": high}
    numeric = folds.drop(columns=["fold", "patients"])
    for column in numeric:
        metrics[f"cv_{column}_mean"] = float(numeric[column].mean())
        metrics[f"cv_{column}_std"] = float(numeric[column].std(ddof=1)) if len(numeric) > 1 else float("nan")
    ci_text = interval_lines(metrics, intervals, "oof_")
    compared = threshold_rules(val, predictions, rules)
    # the patches' own probabilities: with context, the blended ones were tuned on these very patients
    val_targets = val["target"].to_numpy().astype(int)
    val_probs = val["patch_probability" if "patch_probability" in val else "probability"].to_numpy()
    if len(np.unique(val_targets)) == 2:  # every fold's validation pooled: steadier than a mean of small sets
        metrics["cv_val_pooled_auroc"] = float(roc_auc_score(val_targets, val_probs))
        metrics["cv_val_pooled_auprc"] = float(average_precision_score(val_targets, val_probs))
    context_text = ""
    if not np.array_equal(predictions["patch_probability"], predictions["probability"]):  # the run used context
        alone = threshold_free(targets, predictions["patch_probability"].to_numpy())
        metrics |= {f"oof_without_context_{name}": value for name, value in alone.items()}
        context_text = (f"Without spatial context (same fold models): AUROC {metrics['oof_without_context_auroc']:.4f}"
                        f"  AUPRC {metrics['oof_without_context_auprc']:.4f}\n")
    contexts = context_rules(val, predictions, rules.get("configured", ("max_f1", {})))
    for values in contexts.to_dict("records"):
        label = values.pop("context").replace(" ", "_")
        metrics |= {f"oof_context_{label}_{k}": float(v) for k, v in values.items()}
    patients_table = patient_table(predictions)
    worst = patients_table.head(5)
    worst_share = worst["errors"].sum() / max(patients_table["errors"].sum(), 1)
    for label, values in compared.set_index("rule").to_dict("index").items():
        metrics |= {f"oof_rule_{label}_{k}": float(v) for k, v in values.items()}
    text = (f"Out-of-fold: {len(targets)} patches from {len(np.unique(patients))} patients in {len(folds)} folds "
            f"(each patch labelled at its fold's validation threshold)\n\n{class_text}\n{imbalance_text}\n"
            f"MCC {metrics['oof_mcc']:.4f}  AUROC {metrics['oof_auroc']:.4f}  AUPRC {metrics['oof_auprc']:.4f}\n"
            f"{context_text}\n"
            f"Patient-bootstrap 95% intervals ({resamples} resamples of patients):\n{ci_text}\n\n"
            f"Per fold (mean ± std):\n{folds.to_string(index=False, float_format='%.4f')}\n\n"
            f"Threshold rules, each tuned on every fold's validation patients (same models):\n"
            f"{compared.to_string(index=False, float_format='%.4f')}\n\n"
            f"Spatial context (neighbours within a radius in patches), weight then threshold tuned on every fold's "
            f"validation patients (same models):\n{contexts.to_string(index=False, float_format='%.4f')}\n\n"
            f"The {len(worst)} patients with the most misclassified patches ({worst_share:.0%} of all errors; every "
            f"patient in cv/oof_patients.csv):\n{worst.to_string(index=False, float_format='%.3f')}\n")
    write_text(out_dir / "oof_report.txt", text)
    write_json(out_dir / "oof_metrics.json", metrics)
    tables = {"folds.csv": folds, "oof_predictions.csv": predictions, "val_predictions.csv": val,
              "threshold_rules.csv": compared, "context_rules.csv": contexts, "oof_patients.csv": patients_table}
    for name, table in tables.items():
        with whole_file(out_dir / name) as partial:
            table.to_csv(partial, index=False)
    save_figure(roc_figure(targets, probs, float(np.mean(thresholds))), out_dir / "oof_roc_curve.png")
    save_figure(pr_figure(targets, probs, float(np.mean(thresholds))), out_dir / "oof_pr_curve.png")
    return metrics, text


def ensemble_operating_point(val: pd.DataFrame, rule: tuple[str, dict[str, Any]], radius: int, weight: float
                             ) -> tuple[float, float]:
    """The ensemble's threshold and its threshold without context: the means over folds of the thresholds `rule`
    gives on each fold's validation patches blended at the ensemble's `weight`, and on them alone (context or
    not, as the ensemble applies it). An approximation: each is tuned on one fold model's P(IDC), while the
    ensemble averages every fold model's; no patient is left to tune on the average itself, since every pool
    patient trained some member."""
    method, options = rule
    blended, alone = [], []
    for _, fold_val in val.groupby("fold"):
        targets, probs = fold_val["target"].to_numpy().astype(int), fold_val["patch_probability"].to_numpy()
        blended.append(tune_threshold(targets, blend_at(fold_val, probs, (radius_neighbours(radius),), [weight]),
                                      method, **options))
        alone.append(tune_threshold(targets, probs, method, **options))
    return float(np.mean(blended)), float(np.mean(alone))


def patch_frame(data: PreparedData, fold: int, rows: np.ndarray, probs: np.ndarray, patch_probs: np.ndarray
                ) -> pd.DataFrame:
    """One fold's predictions of index `rows`: fold, patient, file, x, y, target, probability (what the fold's
    threshold applies to) and patch_probability (the patch alone, before any spatial context)."""
    index = data.index
    return pd.DataFrame({"fold": fold, "patient": index.patients[rows].astype(str),
                         "file": [index.paths[i] for i in rows], "x": index.xs[rows], "y": index.ys[rows],
                         "target": index.labels[rows], "probability": probs, "patch_probability": patch_probs})
