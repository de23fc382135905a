"""Mixup (Zhang et al. 2018, `mixup.alpha`): train on convex blends of patch pairs and of their losses.

Each training batch is blended with a shuffled copy of itself, one weight per batch drawn from
Beta(alpha, alpha) and folded onto [0.5, 1] so that a patch outweighs its partner (its own target then names the
blend, for the training metrics). The loss is the same blend of the loss on each patch's target and on its
partner's; for BCE that equals BCE on the blended (soft) targets, and it works for every loss in the registry,
class-weighted and focal ones included, which expect hard targets. Validation, test and prediction see the patches
themselves.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn


class MixupBatch(NamedTuple):
    """How one batch is blended: `weight` of each patch, 1 - `weight` of the patch at `order` in the batch."""

    weight: float
    order: torch.Tensor

    def blend(self, inputs: torch.Tensor) -> torch.Tensor:
        """weight x inputs + (1 - weight) x their partners."""
        return inputs * self.weight + inputs[self.order] * (1 - self.weight)


def draw_mixup(alpha: float, size: int, device: torch.device | str = "cpu") -> MixupBatch | None:
    """A blend for a batch of `size` on `device` (the order drawn there: no copy that would wait for an accelerator)
    from torch's generators, seeded per run; None when `alpha` is 0 (off)."""
    if alpha < 0:
        raise ValueError(f"mixup.alpha must be a number >= 0, got {alpha}")
    if alpha == 0:
        return None
    weight = float(torch.distributions.Beta(alpha, alpha).sample())
    return MixupBatch(max(weight, 1 - weight), torch.randperm(size, device=device))


def mixed_loss(criterion: nn.Module, logits: torch.Tensor, targets: torch.Tensor, mix: MixupBatch) -> torch.Tensor:
    """The loss of logits of blended inputs: the same blend of the loss on the patches' and the partners' targets."""
    partners = targets[mix.order]
    return criterion(logits, targets) * mix.weight + criterion(logits, partners) * (1 - mix.weight)
