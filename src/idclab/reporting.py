"""The test step shared by training and evaluation: metrics, the per-class report and figures."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pytorch_lightning as pl
import torch

from idclab.data.datamodule import PatchDataModule
from idclab.metrics import binary_metrics, imbalance_metrics, patient_bootstrap, report
from idclab.module import IDCClassifier
from idclab.plots import confusion_matrix_figure, pr_figure, roc_figure
from idclab.tracking import TrackedRun


def test_and_report(trainer: pl.Trainer, classifier: IDCClassifier, datamodule: PatchDataModule,
                    out_dir: Path, run: TrackedRun | None = None, ckpt_path: str | None = None,
                    bootstrap_resamples: int = 1000) -> dict[str, Any]:
    """Test `classifier` (or the weights at `ckpt_path`) at its operating threshold and at 0.5.

    Prints and writes to `out_dir` (and the run's `test/`): the per-class classification report, the
    imbalanced-learn report, patient-bootstrap 95% intervals, metrics (JSON), raw predictions, the
    confusion matrix, ROC and PR curves. Returns every test metric.
    """
    results = dict(trainer.test(classifier, datamodule=datamodule, ckpt_path=ckpt_path, verbose=False)[0])
    probs = classifier.test_probs.numpy()
    targets = classifier.test_targets.numpy().astype(int)
    threshold = classifier.threshold
    # test batches come in split order; limit_test_batches may have stopped early
    patients = datamodule.data.index.patients[datamodule.data.split.rows["test"][: len(targets)]]
    text, as_dict = report(targets, probs, threshold)
    imbalance_text, imbalance = imbalance_metrics(targets, probs, threshold)
    intervals = patient_bootstrap(targets, probs, patients, threshold, bootstrap_resamples)
    extra = {f"test_{name}": value for name, value in imbalance.items()}
    for name, (low, high) in intervals.items():
        extra |= {f"test_{name}_ci_low": low, f"test_{name}_ci_high": high}
    at_half = binary_metrics(torch.from_numpy(probs), torch.from_numpy(targets), 0.5)
    extra |= {f"test_at_0.5_{name}": value for name, value in at_half.items()}
    results |= extra | {"threshold": threshold}
    ci_text = "\n".join(f"  {name:<18} {results[f'test_{name}']:.4f}  [{low:.4f}, {high:.4f}]"
                         for name, (low, high) in intervals.items())
    summary = (f"Test: {len(targets)} patches from {len(np.unique(patients))} patients, "
               f"threshold {threshold:.4f}{' (test-time augmentation)' if classifier.tta else ''}\n\n"
               f"{text}\n{imbalance_text}\nMCC {imbalance['mcc']:.4f}\n\n"
               f"Patient-bootstrap 95% intervals ({bootstrap_resamples} resamples of patients):\n{ci_text}\n\n"
               f"At threshold 0.5: F1 {at_half['f1']:.4f}, balanced accuracy {at_half['balanced_accuracy']:.4f}, "
               f"recall {at_half['recall']:.4f}, precision {at_half['precision']:.4f}\n")
    print("\n" + summary)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "classification_report.txt").write_text(summary)
    (out_dir / "classification_report.json").write_text(json.dumps(as_dict, indent=2))
    (out_dir / "metrics.json").write_text(json.dumps(results, indent=2))
    np.savez_compressed(out_dir / "predictions.npz", probs=probs, targets=targets, patients=patients)
    cells = [int(results[f"test_{k}"]) for k in ("tn", "fp", "fn", "tp")]
    figures = {
        "confusion_matrix.png": confusion_matrix_figure(*cells, threshold=threshold),
        "roc_curve.png": roc_figure(targets, probs),
        "pr_curve.png": pr_figure(targets, probs),
    }
    for name, figure in figures.items():
        figure.savefig(out_dir / name, dpi=110)
        plt.close(figure)
    if run is not None:
        run.log_metrics(extra)
        for path in sorted(out_dir.iterdir()):
            run.log_file(path, "test")
    return results
