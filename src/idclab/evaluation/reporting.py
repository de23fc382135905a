"""The test step shared by training and evaluation: metrics, the per-class report and figures."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from matplotlib.figure import Figure
from sklearn.metrics import average_precision_score, f1_score, precision_recall_fscore_support, roc_auc_score

from idclab.classifier.module import IDCClassifier
from idclab.config.validation import ConfigError
from idclab.data.datamodule import PatchDataModule
from idclab.evaluation.plots import (
    calibration_figure,
    confusion_matrix_figure,
    gallery_figure,
    pr_figure,
    roc_figure,
    slide_heatmap_figure,
)
from idclab.fileutil import save_figure, whole_file, write_json, write_text
from idclab.scoring.metrics import (
    binary_metrics,
    expected_calibration_error,
    imbalance_metrics,
    interval_lines,
    patient_bootstrap,
    report,
)
from idclab.tracking.runs import TrackedRun
from idclab.verbosity import is_verbose


def error_galleries(datamodule: PatchDataModule, rows: np.ndarray, targets: np.ndarray, probs: np.ndarray,
                    threshold: float, size: int) -> dict[str, Figure]:
    """The most confident false positives and false negatives, with P(IDC), patient and (x, y); none for size 0."""
    galleries: dict[str, Figure] = {}
    if size == 0:
        return galleries
    index, images = datamodule.data.index, datamodule.data.cache.images
    preds = probs >= threshold
    for name, wrong, order in (("false_positives", preds & (targets == 0), -1),
                               ("false_negatives", ~preds & (targets == 1), 1)):
        chosen = np.flatnonzero(wrong)
        chosen = chosen[np.argsort(order * probs[chosen], kind="stable")][:size]
        captions = [f"{index.patients[rows[i]]} ({index.xs[rows[i]]},{index.ys[rows[i]]})" for i in chosen]
        title = f"Most confident {name.replace('_', ' ')} ({wrong.sum()} in all, threshold {threshold:.2f})"
        galleries[f"{name}.png"] = gallery_figure(np.asarray(images[rows[chosen]]), probs[chosen], captions, title)
    return galleries


def heatmaps(datamodule: PatchDataModule, rows: np.ndarray, targets: np.ndarray, probs: np.ndarray,
             threshold: float, patients: int | list[str]) -> dict[str, Figure]:
    """Slide heatmaps for the given test patients, or for that many with the most patches."""
    index, images = datamodule.data.index, datamodule.data.cache.images
    test_patients = index.patients[rows]
    if isinstance(patients, int):
        names, counts = np.unique(test_patients, return_counts=True)
        patients = names[np.argsort(-counts, kind="stable")][:patients].tolist()
    figures, ids = {}, test_patients.astype(str)
    for patient in map(str, patients):  # Hydra reads an id such as 9036 as a number
        mine = np.flatnonzero(ids == patient)
        if mine.size == 0:
            continue
        f1 = f1_score(targets[mine], probs[mine] >= threshold, zero_division=0)
        title = f"Patient {patient}: {mine.size} patches, {int(targets[mine].sum())} IDC, patch F1 {f1:.2f}"
        figures[f"heatmaps/{patient}.png"] = slide_heatmap_figure(
            np.asarray(images[rows[mine]]), index.xs[rows[mine]], index.ys[rows[mine]], probs[mine],
            targets[mine], threshold, title)
    return figures


def tested_patients(split_patients: Mapping[str, list[Any]], cross_validated: bool) -> tuple[list[Any], str]:
    """The patients a run tests, and what to call them: the test split's, or for a cross-validation every patient
    (each pool patient out of fold in its fold, the test split with the fold ensemble)."""
    if cross_validated:
        return [p for patients in split_patients.values() for p in patients], ("patients tested out of fold or on the "
                                                                               "test split")
    return list(split_patients.get("test", [])), "test patients"


def check_heatmap_patients(requested: int | list[Any], tested: list[Any], what: str = "test patients") -> None:
    """ConfigError naming the patients of a `report.heatmap_patients` list that are not `tested` (no heatmap would be
    drawn for them, and nothing said)."""
    if isinstance(requested, int) or not tested:
        return
    known = {str(p) for p in tested}
    missing = [str(p) for p in requested if str(p) not in known]
    if missing:
        shown = ", ".join(sorted(known)[:8]) + (", ..." if len(known) > 8 else "")
        raise ConfigError(f"report.heatmap_patients: {', '.join(missing)} not among the {len(known)} {what} "
                          f"({shown})")


def test_and_report(trainer: pl.Trainer, classifier: IDCClassifier, datamodule: PatchDataModule,
                    out_dir: Path, run: TrackedRun | None = None, ckpt_path: str | None = None,
                    bootstrap_resamples: int = 1000, heatmap_patients: int | list[str] = 3,
                    gallery_size: int = 16) -> dict[str, Any]:
    """Test `classifier` (or the weights at `ckpt_path`) at its operating threshold and at 0.5.

    Prints and writes to `out_dir` (and the run's `test/`): the per-class classification report, the
    imbalanced-learn report, patient-bootstrap 95% intervals, metrics (JSON), raw predictions, the
    confusion matrix, ROC and PR curves with the operating point, the reliability diagram (ECE),
    galleries of the most confident errors and slide heatmaps of some test patients. Returns every
    test metric.
    """
    index = datamodule.data.index
    classifier.positions = (index.patients, index.xs, index.ys)  # for spatial context, when the model uses it
    results = dict(trainer.test(classifier, datamodule=datamodule, ckpt_path=ckpt_path, verbose=False,
                                weights_only=True)[0])
    probs = classifier.test_probs.numpy()
    targets = classifier.test_targets.numpy().astype(int)
    threshold = classifier.threshold
    rows = classifier.test_rows.numpy()  # each prediction's index row (limit_test_batches may have stopped early)
    patients = datamodule.data.index.patients[rows]
    text, as_dict = report(targets, probs, threshold)
    imbalance_text, imbalance = imbalance_metrics(targets, probs, threshold)
    intervals = patient_bootstrap(targets, probs, patients, threshold, bootstrap_resamples)
    extra = {f"test_{name}": value for name, value in imbalance.items()}
    for name, (low, high) in intervals.items():
        extra |= {f"test_{name}_ci_low": low, f"test_{name}_ci_high": high}
    at_half = binary_metrics(torch.from_numpy(probs), torch.from_numpy(targets), 0.5)
    extra |= {f"test_at_0.5_{name}": value for name, value in at_half.items()}
    extra["test_ece"] = expected_calibration_error(targets, probs)
    context_line = ""
    if classifier.uses_context:  # the same model without its neighbours: what the context buys
        alone = classifier.test_patch_probs.numpy()
        extra |= {f"test_without_context_{name}": value for name, value in threshold_free(targets, alone).items()}
        context_line = (f"Spatial context: weight {classifier.context_weight:.2f} on the mean of neighbours within "
                        f"{classifier.context_radius} patch(es). Without it: AUROC "
                        f"{extra['test_without_context_auroc']:.4f}, AUPRC {extra['test_without_context_auprc']:.4f}\n")
    results |= extra | {"threshold": threshold}
    ci_text = interval_lines(results, intervals, "test_")
    how = f"threshold {threshold:.4f}{' (test-time augmentation)' if classifier.tta else ''}"
    summary = (f"Test: {len(targets)} patches from {len(np.unique(patients))} patients, {how}\n\n"
               f"{text}\n{imbalance_text}\nMCC {imbalance['mcc']:.4f}\n\n"
               f"Patient-bootstrap 95% intervals ({bootstrap_resamples} resamples of patients"
               f"{rough(len(np.unique(patients)))}):\n{ci_text}\n\n"
               f"At threshold 0.5: F1 {at_half['f1']:.4f}, balanced accuracy {at_half['balanced_accuracy']:.4f}, "
               f"recall {at_half['recall']:.4f}, precision {at_half['precision']:.4f}\n{context_line}")
    if is_verbose():
        print("\n" + summary)
    else:
        rule = (getattr(classifier, "hparams", None) or {}).get("threshold_method")
        notes = [f"{rule} on validation"] * bool(rule) + ["test-time augmentation"] * classifier.tta
        called_at = f"P(IDC) >= {threshold:.4f}" + (f" ({', '.join(notes)})" if notes else "")
        print(brief_report(targets, probs >= threshold, len(np.unique(patients)), results, bootstrap_resamples,
                           called_at) + context_line.rstrip())
    write_text(out_dir / "classification_report.txt", summary)
    write_json(out_dir / "classification_report.json", as_dict)
    write_json(out_dir / "metrics.json", results)
    with whole_file(out_dir / "predictions.npz") as partial:
        np.savez_compressed(partial, probs=probs, targets=targets, patients=patients)
    cells = [int(results[f"test_{k}"]) for k in ("tn", "fp", "fn", "tp")]
    figures = {
        "confusion_matrix.png": confusion_matrix_figure(*cells, threshold=threshold),
        "roc_curve.png": roc_figure(targets, probs, threshold),
        "pr_curve.png": pr_figure(targets, probs, threshold),
        "calibration.png": calibration_figure(targets, probs),
        **error_galleries(datamodule, rows, targets, probs, threshold, gallery_size),
        **heatmaps(datamodule, rows, targets, probs, threshold, heatmap_patients),
    }
    for name, figure in figures.items():
        save_figure(figure, out_dir / name)
    if run is not None:  # at the step Lightning logged the other test metrics with
        run.log_metrics(extra, step=trainer.current_epoch)
        for path in sorted(out_dir.rglob("*")):
            if path.is_file():
                run.log_file(path, str(Path("test") / path.parent.relative_to(out_dir)))
    return results


def brief_report(targets: np.ndarray, called: np.ndarray, patients: int, results: dict[str, Any], resamples: int,
                 how: str) -> str:
    """The test report in a few lines: precision, recall, F1 and patches per class, the counts behind them, and
    balanced accuracy, AUROC and F1 with their patient-bootstrap 95% intervals (from `results`' `test_*`)."""
    idc, negatives, calls = int((targets == 1).sum()), int((targets == 0).sum()), int(called.sum())
    found, cleared = int((called & (targets == 1)).sum()), int((~called & (targets == 0)).sum())
    lines = [f"Test: {len(targets)} patches of {patients} patients held out from training; IDC called at {how}",
             f"  {'class':<9} {'precision':>9} {'recall':>7} {'F1':>7} {'patches':>8}"]
    for name, label, count in (("IDC", 1, idc), ("non-IDC", 0, negatives)):
        precision, recall, f1, _ = precision_recall_fscore_support(targets, called, labels=[label], zero_division=0)
        lines.append(f"  {name:<9} {precision[0]:>9.4f} {recall[0]:>7.4f} {f1[0]:>7.4f} {count:>8}")
    lines.append(f"  {found} of {idc} IDC patches found; {found} of {calls} IDC calls right; "
                 f"{cleared} of {negatives} non-IDC patches called non-IDC")
    lines.append("  " + ", ".join(f"{label} {results[f'test_{key}']:.4f} [{results[f'test_{key}_ci_low']:.4f}, "
                                  f"{results[f'test_{key}_ci_high']:.4f}]" for key, label in HEADLINE)
                 + f" (95% intervals, {resamples} resamples of the patients{rough(patients)})")
    return "\n".join(lines) + "\n"


FEW_PATIENTS = 10  # a patient bootstrap over fewer resamples too few patients for its interval to mean much


def rough(patients: int) -> str:
    """`; from 3 patients: rough` when a patient bootstrap draws from fewer than FEW_PATIENTS patients, else ``."""
    return f"; from {patients} patients: rough" if patients < FEW_PATIENTS else ""


HEADLINE = (("balanced_accuracy", "balanced accuracy"), ("auroc", "AUROC"), ("f1", "F1"))  # with intervals


def headline(results: dict[str, Any], validation: tuple[str, float] | None = None, prefix: str = "test_") -> str:
    """A run's description in the MLflow UI: one line (the runs table shows a description's first line) with the
    validation score that chose the model and the test (or, `prefix="oof_"`, out-of-fold) balanced accuracy, AUROC
    and F1 (IDC) with their patient-bootstrap 95% intervals; then what the numbers are."""
    scores = []
    for key, label in HEADLINE:
        value, low, high = (results.get(f"{prefix}{key}{end}") for end in ("", "_ci_low", "_ci_high"))
        if value is not None:
            interval = f" [{low:.4f}, {high:.4f}]" if low is not None and high is not None else ""
            scores.append(f"{label} {float(value):.4f}{interval}")
    what = "out of fold" if prefix == "oof_" else "test"
    chose = [f"{validation[0]} {validation[1]:.4f} on validation"] if validation else []
    line = "; ".join([*chose, f"{what} {', '.join(scores)}"])
    return (f"{line}\n\n" + "The validation score chose the model; " * bool(validation)
            + f"{what} intervals: 95%, resampling the patients.")


def threshold_free(targets: np.ndarray, probs: np.ndarray) -> dict[str, float]:
    """AUROC and AUPRC (NaN when `targets` hold a single class)."""
    if len(np.unique(targets)) < 2:
        return {"auroc": float("nan"), "auprc": float("nan")}
    return {"auroc": float(roc_auc_score(targets, probs)), "auprc": float(average_precision_score(targets, probs))}


def report_options(report_cfg: Mapping[str, Any]) -> dict[str, Any]:
    """Keyword arguments of `test_and_report` from a `report` config section."""
    patients = report_cfg["heatmap_patients"]
    return {"bootstrap_resamples": int(report_cfg["bootstrap_resamples"]),
            "heatmap_patients": patients if isinstance(patients, int) else [str(p) for p in patients],
            "gallery_size": int(report_cfg["gallery_size"])}
