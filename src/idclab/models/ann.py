"""A fully connected network on the flattened patch (the seed's baseline)."""

from __future__ import annotations

import torch
from torch import nn

from idclab.models.precision import in_float32


class ANN(nn.Module):
    """Flatten -> [Linear -> ReLU -> Dropout] x len(hidden) -> Linear(1)."""

    def __init__(self, hidden: tuple[int, ...] = (512, 128), dropout: float = 0.3, image_size: int = 50,
                 in_channels: int = 3):
        super().__init__()
        layers: list[nn.Module] = [nn.Flatten()]
        width = in_channels * image_size * image_size
        for size in hidden:
            layers += [nn.Linear(width, size), nn.ReLU(inplace=True), nn.Dropout(dropout)]
            width = size
        layers.append(nn.Linear(width, 1))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return in_float32(self.net[-1], self.net[:-1](x)).squeeze(1)
