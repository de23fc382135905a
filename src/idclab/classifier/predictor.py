"""A trained classifier as plain torch, for prediction: the backbone with its stain normalisation and channel
standardisation, the operating threshold and the spatial context; no Lightning, loss or metrics.

For the same checkpoint it gives the P(IDC) `IDCClassifier` (and `EnsembleClassifier`) give: the same state dict
keys (`model.*`, `stain.*`), the same input standardisation, the same mean of members' probabilities.
`idclab.config.checkpoint.load_predictor` builds one from a checkpoint file.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

ENSEMBLE_KEY = "ensemble"  # a checkpoint of several members (`idclab.classifier.ensemble`): their checkpoints


class ContextRule:
    """The thresholds of a model with its spatial context: `threshold`, `context_weight` (> 0: each patch blended
    with its slide neighbours) and `patch_threshold` (for a patch without known neighbours), set by the owner."""

    threshold: float
    context_weight: float
    patch_threshold: float | None

    @property
    def uses_context(self) -> bool:
        return self.context_weight > 0

    @property
    def alone_threshold(self) -> float:
        """The threshold for a patch scored without its neighbours."""
        return self.patch_threshold if self.uses_context and self.patch_threshold is not None else self.threshold


class OperatingPoint(ContextRule, nn.Module):
    """What turns P(IDC) into labels: the threshold, and the spatial context it was tuned with (`ContextRule`)."""

    tta = False  # prediction here is plain; test-time augmentation re-tunes on validation (evaluate.py's path)

    def __init__(self, views: tuple[int, ...], threshold: float = 0.5, context_weight: float = 0.0,
                 context_radius: int = 1, patch_threshold: float | None = None):
        super().__init__()
        self.input_views = views  # non-empty: each patch comes with its neighbourhood views (3 channels each)
        self.threshold = float(threshold)
        self.context_weight, self.context_radius, self.patch_threshold = context_weight, context_radius, patch_threshold

    def blend(self, probs: np.ndarray, patients: np.ndarray, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
        """`probs` blended with those of their neighbours among them (patient, x, y in pixels per patch)."""
        from idclab.scoring.context import neighbour_matrix, smooth

        return smooth(probs, neighbour_matrix(patients, xs, ys, self.context_radius), self.context_weight)

    @property
    def device(self) -> torch.device:
        return next(self.parameters(), torch.empty(0)).device

    def probabilities(self, images: torch.Tensor) -> torch.Tensor:
        """P(IDC) per uint8 N x C x H x W image."""
        return torch.sigmoid(self(images).float())


class Predictor(OperatingPoint):
    """One trained backbone: logits for uint8 images, standardised as in training."""

    def __init__(self, model: nn.Module, stain: nn.Module, mean: list[float], std: list[float],
                 config: dict[str, Any], views: tuple[int, ...], **operating_point: Any):
        super().__init__(views, **operating_point)
        self.model, self.stain, self.config = model, stain, config
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Each 3-channel view stain-normalised and standardised, as `IDCClassifier.standardised` does."""
        views = images.float().div_(255.0).split(3, dim=1)
        return self.model(torch.cat([self.stain(view).sub_(self.mean).div_(self.std) for view in views], dim=1))


class EnsemblePredictor(OperatingPoint):
    """Several trained backbones: the logit of their mean P(IDC), as `EnsembleClassifier`'s forward."""

    def __init__(self, members: list[Predictor], **operating_point: Any):
        super().__init__(members[0].input_views, **operating_point)
        self.members = nn.ModuleList(members)
        self.config = members[0].config

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        probs = torch.stack([torch.sigmoid(member(images).float()) for member in self.members]).mean(0)
        return torch.logit(probs, eps=1e-6)
