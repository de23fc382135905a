"""Loss functions on logits, chosen by the `loss` config group.

Every factory takes the training split's class counts `[negatives, positives]`, so that losses
that re-weight classes derive their weights from the data actually trained on. Losses that weight the
classes (`ClassWeightedLoss`) can switch the weighting off, for deferred re-weighting (DRW).
"""

from __future__ import annotations

import math

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
    return WeightedBCE(float(pos_weight))


class ClassWeightedLoss(nn.Module):
    """A loss that weights the classes; `set_class_weighting(False)` makes the weights uniform (1 per class)."""

    def __init__(self):
        super().__init__()
        self.class_weighting = True

    def set_class_weighting(self, enabled: bool) -> None:
        """Turn the class weights on (as configured) or off (uniform), e.g. per epoch for DRW."""
        self.class_weighting = enabled


class WeightedBCE(ClassWeightedLoss):
    """Binary cross-entropy with the positive class weighted by `pos_weight`."""

    def __init__(self, pos_weight: float):
        super().__init__()
        self.register_buffer("pos_weight", torch.tensor(pos_weight))

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        pos_weight = self.pos_weight if self.class_weighting else None
        return nn.functional.binary_cross_entropy_with_logits(logits, targets, pos_weight=pos_weight)


class FocalLoss(ClassWeightedLoss):
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
        alpha = self.alpha if self.class_weighting else -1.0
        return sigmoid_focal_loss(logits, targets, alpha=alpha, gamma=self.gamma, reduction="mean")


def focal(class_counts: list[int], alpha: float = 0.25, gamma: float = 2.0) -> nn.Module:
    """Focal loss with a fixed positive-class weight `alpha` and focusing parameter `gamma`."""
    return FocalLoss(alpha, gamma)


class ClassBalancedLoss(ClassWeightedLoss):
    """Class-balanced loss (Cui et al. 2019): each class weighted by the inverse of its effective number
    of samples, (1 - beta) / (1 - beta ** n_c), normalised so the two weights sum to 2.

    `base` is "bce" (weighted binary cross-entropy) or "focal" (weighted focal loss with `gamma`).
    """

    def __init__(self, class_counts: list[int], beta: float = 0.999, base: str = "bce", gamma: float = 2.0):
        super().__init__()
        if not 0 <= beta < 1:
            raise ValueError(f"loss.beta must be in [0, 1), got {beta}")
        if base not in ("bce", "focal"):
            raise ValueError(f"loss.base must be bce or focal, got {base!r}")
        if min(class_counts) == 0:
            raise ValueError(f"class_balanced loss: a class has no training patch (counts {class_counts})")
        effective = [(1 - beta ** n) / (1 - beta) if beta > 0 else 1.0 for n in class_counts]
        weights = torch.tensor([1 / e for e in effective], dtype=torch.float32)
        self.register_buffer("weights", 2 * weights / weights.sum())
        self.base = base
        self.gamma = gamma

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        per_patch = nn.functional.binary_cross_entropy_with_logits(logits, targets, reduction="none")
        if self.base == "focal":
            p_t = torch.exp(-per_patch)
            per_patch = per_patch * (1 - p_t) ** self.gamma
        if not self.class_weighting:
            return per_patch.mean()
        weight = self.weights[1] * targets + self.weights[0] * (1 - targets)
        return (weight * per_patch).mean()


def class_balanced(class_counts: list[int], beta: float = 0.999, base: str = "bce", gamma: float = 2.0) -> nn.Module:
    """Class-balanced loss over BCE or focal loss (Cui et al. 2019)."""
    return ClassBalancedLoss(class_counts, beta, base, gamma)


class LogitAdjustedLoss(nn.Module):
    """Logit-adjusted BCE (Menon et al. 2021): BCE on logit + tau * log(prior_pos / prior_neg).

    The binary form of adding tau * log(prior) to each class logit; it enlarges the margin of the rare
    class during training only: predictions use the raw logits.
    """

    def __init__(self, class_counts: list[int], tau: float = 1.0):
        super().__init__()
        if tau < 0:
            raise ValueError(f"loss.tau must be >= 0, got {tau}")
        negatives, positives = class_counts
        if min(negatives, positives) == 0:
            raise ValueError(f"logit_adjusted loss: a class has no training patch (counts {class_counts})")
        self.register_buffer("shift", torch.tensor(tau * math.log(positives / negatives)), persistent=False)

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return nn.functional.binary_cross_entropy_with_logits(logits + self.shift, targets)


def logit_adjusted(class_counts: list[int], tau: float = 1.0) -> nn.Module:
    """Logit-adjusted loss with the training split's class prior and temperature `tau`."""
    return LogitAdjustedLoss(class_counts, tau)


class RankingLoss(nn.Module):
    """BCE plus `weight` x the pairwise logistic (RankNet) loss of every IDC / non-IDC pair of the batch.

    The pair term, mean over pairs of log(1 + exp(s_neg - s_pos)), is a smooth surrogate of 1 - AUROC (Burges
    et al. 2005; AUC maximisation for imbalanced data, Yuan et al. 2021): it asks each IDC patch to score above
    each non-IDC patch, and a shuffled batch's pairs are almost all of different patients, the ranking the pooled
    AUROC measures. BCE keeps the scores probabilities. A batch of one class adds nothing. The pairs are weighed
    by masks, not gathered (no wait for an accelerator), in blocks of rows of at most `max_elements` pair terms,
    so whole-epoch losses stay within memory. Under DDP each device pairs its own share of a batch only, so the
    training loss has fewer pairs than the whole-epoch validation loss, which pairs every patch.
    """

    def __init__(self, weight: float = 1.0, max_elements: int = 1 << 24):
        super().__init__()
        if weight < 0:
            raise ValueError(f"loss.weight must be >= 0, got {weight}")
        self.weight = weight
        self.max_elements = max_elements

    def pairwise(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Mean log(1 + exp(s_neg - s_pos)) over IDC / non-IDC pairs (0 without a pair)."""
        positive = (targets > 0.5).to(logits.dtype)
        negative = 1 - positive
        rows = max(1, self.max_elements // max(1, len(logits)))
        total = sum((nn.functional.softplus(logits[None, :] - logits[start:start + rows, None])
                     * positive[start:start + rows, None] * negative[None, :]).sum()
                    for start in range(0, len(logits), rows))
        return total / (positive.sum() * negative.sum()).clamp(min=1)

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        loss = nn.functional.binary_cross_entropy_with_logits(logits, targets)
        return loss + self.weight * self.pairwise(logits, targets) if self.weight > 0 else loss


def ranking(class_counts: list[int], weight: float = 1.0) -> nn.Module:
    """BCE with a pairwise ranking term of weight `weight` (see `RankingLoss`)."""
    return RankingLoss(weight)


class TruncatedLoss(nn.Module):
    """BCE that leaves out, within each class of the batch, the `drop` share of patches with the highest loss
    (loss truncation, Kang & Hashimoto 2020): patches whose label the model contradicts most, which in this data
    are often region-level labels that do not fit the patch. Per class, floor(drop x the class's patches) are left
    out, so the rarer class loses no larger a share than the other; the mean is over the patches kept. Ranks are
    found on the device (no wait for an accelerator).
    """

    def __init__(self, drop: float = 0.1):
        super().__init__()
        if not 0 <= drop < 1:
            raise ValueError(f"loss.drop must be in [0, 1), got {drop}")
        self.drop = drop

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        per_patch = nn.functional.binary_cross_entropy_with_logits(logits, targets, reduction="none")
        kept = torch.ones_like(per_patch, dtype=torch.bool)
        for cls in (False, True):
            members = (targets > 0.5) == cls
            order = torch.where(members, per_patch.detach(), -torch.inf).argsort(descending=True)
            rank = torch.empty_like(order)
            rank[order] = torch.arange(len(order), device=order.device)
            kept &= ~(members & (rank < torch.floor(self.drop * members.sum())))
        return (per_patch * kept).sum() / kept.sum().clamp(min=1)


def truncated(class_counts: list[int], drop: float = 0.1) -> nn.Module:
    """BCE without each class's `drop` share of highest losses in a batch (see `TruncatedLoss`)."""
    return TruncatedLoss(drop)
