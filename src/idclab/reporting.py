"""The test step shared by training and evaluation: metrics, the per-class report and figures."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pytorch_lightning as pl

from idclab.data.datamodule import PatchDataModule
from idclab.metrics import report
from idclab.module import IDCClassifier
from idclab.plots import confusion_matrix_figure, pr_figure, roc_figure
from idclab.tracking import TrackedRun


def test_and_report(trainer: pl.Trainer, classifier: IDCClassifier, datamodule: PatchDataModule,
                    out_dir: Path, run: TrackedRun | None = None, ckpt_path: str | None = None) -> dict[str, Any]:
    """Test `classifier` (or the weights at `ckpt_path`), print the classification report and write
    report (text, JSON), confusion matrix, ROC and PR curves to `out_dir` and to the run's `test/`.
    """
    results = trainer.test(classifier, datamodule=datamodule, ckpt_path=ckpt_path, verbose=False)[0]
    probs = classifier.test_probs.numpy()
    targets = classifier.test_targets.numpy().astype(int)
    text, as_dict = report(targets, probs, classifier.threshold)
    print(f"\nTest classification report ({len(targets)} patches, threshold {classifier.threshold:.2f}):\n{text}")
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "classification_report.txt").write_text(text)
    (out_dir / "classification_report.json").write_text(json.dumps(as_dict, indent=2))
    (out_dir / "metrics.json").write_text(json.dumps(results, indent=2))
    np.savez_compressed(out_dir / "predictions.npz", probs=probs, targets=targets)
    cells = [int(results[f"test_{k}"]) for k in ("tn", "fp", "fn", "tp")]
    figures = {
        "confusion_matrix.png": confusion_matrix_figure(*cells, threshold=classifier.threshold),
        "roc_curve.png": roc_figure(targets, probs),
        "pr_curve.png": pr_figure(targets, probs),
    }
    for name, figure in figures.items():
        figure.savefig(out_dir / name, dpi=110)
        plt.close(figure)
    if run is not None:
        for path in sorted(out_dir.iterdir()):
            run.log_file(path, "test")
    return results
