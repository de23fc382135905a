"""IDCNet: a small CNN designed for 50x50 patches that trains fast on a CPU.

Downsampling comes first (a stride-2 stem takes 50x50 to 25x25), so no convolution runs at full
resolution; each stage is [stride-2 conv -> (depth - 1) convs], all 3x3 with batch norm and ReLU; global
average pooling replaces the large dense layer of the seed CNN. With `residual`, each stride-1 conv is a
residual unit, ReLU(x + BN(conv(x))): same parameters, identity shortcuts.
"""

from __future__ import annotations

import torch
from torch import nn

from idclab.models.precision import in_float32


def conv_bn_relu(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    """3x3 convolution (no bias) -> batch norm -> ReLU."""
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False),
                         nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class Residual(nn.Module):
    """ReLU(x + BN(conv3x3(x))): a residual unit keeping width and resolution."""

    def __init__(self, width: int):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(width, width, 3, padding=1, bias=False), nn.BatchNorm2d(width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x + self.body(x))


class IDCNet(nn.Module):
    """Stages of widths `widths` (each halving the resolution), `depth` convs per stage, GAP, dropout, linear."""

    def __init__(self, widths: tuple[int, ...] = (24, 48, 96), depth: int = 2, dropout: float = 0.2,
                 residual: bool = False, in_channels: int = 3):
        super().__init__()
        if not widths or depth < 1:
            raise ValueError(f"model.widths must be non-empty and model.depth >= 1, got {widths} and {depth}")
        layers: list[nn.Module] = []
        cin = in_channels
        for width in widths:
            layers.append(conv_bn_relu(cin, width, stride=2))
            layers += [Residual(width) if residual else conv_bn_relu(width, width) for _ in range(depth - 1)]
            cin = width
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(dropout), nn.Linear(cin, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return in_float32(self.head, self.features(x)).squeeze(1)
