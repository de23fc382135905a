"""The calibrate stage: the operating threshold (and spatial context) tuned on the validation patients."""

from __future__ import annotations

import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch

from idclab.classifier.interrupts import InterruptGuard
from idclab.classifier.module import IDCClassifier
from idclab.data.datamodule import PatchDataModule
from idclab.scoring.context import neighbour_matrix, smooth, tune_weight
from idclab.scoring.thresholds import rule_of, tune_threshold
from idclab.verbosity import detail


def choose_threshold(trainer: pl.Trainer, classifier: IDCClassifier, datamodule: PatchDataModule,
                     best_path: str | None, threshold_cfg: Mapping[str, Any],
                     context_cfg: Mapping[str, Any] | None = None) -> tuple[float, np.ndarray, np.ndarray, np.ndarray]:
    """Load the best weights, predict the validation split and set the operating threshold it gives;
    returns the threshold with the validation rows, the probabilities it was tuned on and the patches' own
    probabilities (the same without context).

    With `context=neighbours`, the context weight (`context_cfg["weight"]`, or tuned when null) blends each
    validation patch with its neighbours first, and the threshold is tuned on those blended probabilities;
    the threshold tuned without context is kept for patches scored alone.
    """
    batches = trainer.predict(classifier, dataloaders=datamodule.val_dataloader(), ckpt_path=best_path,
                              weights_only=True)
    probs, rows = (torch.cat(parts).numpy() for parts in zip(*batches, strict=True))
    patch_probs = probs
    targets = datamodule.data.index.labels[rows]  # matched to each prediction by its row, not its position
    method, options = rule_of(threshold_cfg)
    patch_threshold = tune_threshold(targets, probs, method, **options)
    if context_cfg is not None and context_cfg["name"] != "none":
        index, radius, weight = datamodule.data.index, context_cfg["radius"], context_cfg["weight"]
        neighbours = neighbour_matrix(index.patients[rows], index.xs[rows], index.ys[rows], radius)
        chosen = "tuned on validation" if weight is None else "set"
        weight = tune_weight(targets, probs, neighbours) if weight is None else float(weight)
        probs = smooth(probs, neighbours, weight)
        classifier.set_context(weight, radius, patch_threshold)
        detail(f"Spatial context: neighbours within {radius} patch(es), weight {weight:.2f} ({chosen}); "
               f"threshold without context {patch_threshold:.4f}")
    threshold = tune_threshold(targets, probs, method, **options)
    classifier.set_threshold(threshold)
    classifier.hparams["threshold_method"] = method  # as store_threshold records it: the report names it
    detail(f"Operating threshold ({method} on validation): {threshold:.4f}")
    return threshold, rows, probs, patch_probs


def context_record(classifier: IDCClassifier) -> dict[str, Any]:
    """The tuned context settings a checkpoint stores with its threshold (none without context)."""
    if not classifier.uses_context:
        return {}
    return {"context_weight": classifier.context_weight, "context_radius": classifier.context_radius,
            "patch_threshold": classifier.patch_threshold}


def context_metrics(classifier: IDCClassifier, context_cfg: Mapping[str, Any]) -> dict[str, float]:
    """The tuned context weight (0 when validation chose none) and the threshold without context, as metrics
    (none when the run has no context configured)."""
    if context_cfg["name"] == "none":
        return {}
    return {"context_weight": classifier.context_weight, "patch_threshold": float(classifier.alone_threshold)}


def one_device_trainer(trainer_cfg: Mapping[str, Any], out_dir: Path, logger: Any = False) -> pl.Trainer:
    """A one-device trainer (of the `trainer` group's accelerator and precision) for validation, threshold choice and
    test (the test set is seen whole and in order); its progress bars only in a terminal (in a log each redraw would
    be a line)."""
    bar = bool(trainer_cfg["enable_progress_bar"]) and sys.stdout.isatty()
    return pl.Trainer(accelerator=trainer_cfg["accelerator"], devices=1, precision=trainer_cfg["precision"],
                      logger=logger, enable_progress_bar=bar,
                      enable_model_summary=False, default_root_dir=out_dir, callbacks=[InterruptGuard()])
