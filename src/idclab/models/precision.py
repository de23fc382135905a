"""Logits in float32 under mixed precision."""

from __future__ import annotations

import torch
from torch import nn


def in_float32(layer: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """`layer(x)` computed in float32 even under autocast: bfloat16 logits keep about 3 significant digits, so
    thresholds tuned on their probabilities would fall between rounding steps and many patches would tie."""
    with torch.autocast(x.device.type, enabled=False):
        return layer(x.float())
