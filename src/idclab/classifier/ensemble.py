"""An ensemble of trained classifiers (e.g. the fold models of a cross-validation) used as one model.

P(IDC) is the mean of the members' probabilities; each member keeps its own normalisation. The ensemble
is saved as one weights-only checkpoint holding the members' checkpoints, so `evaluate.py`, prediction,
the registry and the served MLflow model load it exactly like a single model.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from idclab.classifier.module import IDCClassifier
from idclab.classifier.predictor import ENSEMBLE_KEY
from idclab.fileutil import whole_file

ENSEMBLE_FILE = "ensemble.ckpt"  # under a run's checkpoints/


class EnsembleClassifier(IDCClassifier):
    """Averages the members' P(IDC); `forward` returns the logit of that mean, so testing, thresholds,
    test-time augmentation and prediction work unchanged (validation loss: the first member's loss function)."""

    def __init__(self, members: list[IDCClassifier], threshold: float,
                 split_patients: dict[str, list[str]] | None = None, data_fingerprint: dict[str, Any] | None = None,
                 **context: Any):
        first = members[0].hparams
        super().__init__(nn.ModuleList(members), members[0].criterion, config=first["config"],
                         mean=[0.0, 0.0, 0.0], std=[1.0, 1.0, 1.0], class_counts=first["class_counts"],
                         threshold=threshold, split_patients=split_patients, data_fingerprint=data_fingerprint,
                         **context)
        self.hparams["members"] = len(members)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        probs = torch.stack([torch.sigmoid(member(images).float()) for member in self.model]).mean(0)
        return torch.logit(probs, eps=1e-6)


def save_ensemble(members: list[Path], threshold: float, path: Path, record: dict[str, Any],
                  context: dict[str, Any] | None = None) -> Path:
    """Write the member checkpoints (read weights-only; an ensemble's members join as members of their own, so the
    file is flat), the ensemble threshold, `record` (the patients of the ensemble's own split) and the spatial
    `context` settings (context_weight, context_radius, patch_threshold) into one file."""
    checkpoints = []
    for member in members:
        checkpoint = torch.load(member, map_location="cpu", weights_only=True)
        checkpoints.extend(checkpoint.get(ENSEMBLE_KEY, [checkpoint]))
    payload = {ENSEMBLE_KEY: [{"state_dict": c["state_dict"], "hyper_parameters": c["hyper_parameters"]}
                              for c in checkpoints], "threshold": float(threshold), **record, **(context or {})}
    with whole_file(path) as partial:
        torch.save(payload, partial)
    return path
