"""The seed's convolutional network: Conv 32-64-128 3x3 with max-pooling, Dense 128, dropout."""

from __future__ import annotations

import torch
from torch import nn

from idclab.models.precision import in_float32


class CNN(nn.Module):
    """[Conv3x3 -> ReLU -> MaxPool2] per width in `channels` -> Flatten -> Dense -> Dropout -> Linear(1)."""

    def __init__(self, channels: tuple[int, ...] = (32, 64, 128), dense: int = 128, dropout: float = 0.5,
                 image_size: int = 50, in_channels: int = 3):
        super().__init__()
        layers: list[nn.Module] = []
        width, size = in_channels, image_size
        for out in channels:
            layers += [nn.Conv2d(width, out, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2)]
            width, size = out, size // 2
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(
            nn.Flatten(), nn.Linear(width * size * size, dense), nn.ReLU(inplace=True),
            nn.Dropout(dropout), nn.Linear(dense, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return in_float32(self.head, self.features(x)).squeeze(1)
