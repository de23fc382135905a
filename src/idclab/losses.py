"""Loss functions on logits, chosen by the `loss` config group.

Every factory takes the training split's class counts `[negatives, positives]`, so that losses
that re-weight classes derive their weights from the data actually trained on.
"""

from __future__ import annotations

import torch
from torch import nn
from torchvision.ops import sigmoid_focal_loss


def bce(class_counts: list[int]) -> nn.Module:
    """Plain binary cross-entropy: every patch counts the same."""
    return nn.BCEWithLogitsLoss()


def weighted_bce(class_counts: list[int], pos_weight: float | None = None) -> nn.Module:
    """Binary cross-entropy with the positive class weighted by `pos_weight`.

    With `pos_weight=None` the weight is negatives / positives of the training split, which gives
    both classes the same total weight.
    """
    if pos_weight is None:
        negatives, positives = class_counts
        if positives == 0:
            raise ValueError("weighted loss: the training split has no positive patch")
        pos_weight = negatives / positives
    if pos_weight <= 0:
        raise ValueError(f"loss.pos_weight must be > 0, got {pos_weight}")
    return nn.BCEWithLogitsLoss(pos_weight=torch.tensor(float(pos_weight)))


class FocalLoss(nn.Module):
    """Sigmoid focal loss (Lin et al. 2017): down-weights easy patches by (1 - p_t) ** gamma.

    `alpha` weights the positive class and 1 - alpha the negative one; alpha < 0 disables it.
    """

    def __init__(self, alpha: float = 0.25, gamma: float = 2.0):
        super().__init__()
        if not (alpha < 0 or 0 <= alpha <= 1):
            raise ValueError(f"loss.alpha must be in [0, 1] (or negative to disable), got {alpha}")
        if gamma < 0:
            raise ValueError(f"loss.gamma must be >= 0, got {gamma}")
        self.alpha = alpha
        self.gamma = gamma

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return sigmoid_focal_loss(logits, targets, alpha=self.alpha, gamma=self.gamma, reduction="mean")


def focal(class_counts: list[int], alpha: float = 0.25, gamma: float = 2.0) -> nn.Module:
    """Focal loss with a fixed positive-class weight `alpha` and focusing parameter `gamma`."""
    return FocalLoss(alpha, gamma)
