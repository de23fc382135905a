"""A Janowczyk-2016-style network: the small AlexNet-like CNN of Janowczyk & Madabhushi's deep-learning tutorial for
digital pathology (J Pathol Inform 2016), whose IDC use case classified patches of this dataset's kind.

Its layout is Caffe's CIFAR-10 "quick" network, as recalled (not checked against the paper here): 5x5 convolutions
of 32, 32 and 64 filters, the first followed by max-pooling, the other two by average pooling (3x3, stride 2,
Caffe's rounding up), a 64-unit dense layer and the classifier, with no nonlinearity between the two dense layers.
The paper fed it 32x32 patches; here it takes the 50x50 patches as they are, with one logit out.
"""

from __future__ import annotations

import torch
from torch import nn

from idclab.models.precision import in_float32


class Janowczyk(nn.Module):
    """Conv5x5(32) -> MaxPool -> ReLU -> Conv5x5(32) -> ReLU -> AvgPool -> Conv5x5(64) -> ReLU -> AvgPool -> Dense(64)
    -> Dropout -> Linear(1); pools 3x3 stride 2, rounding up as Caffe does (50 -> 25 -> 12 -> 6)."""

    def __init__(self, dense: int = 64, dropout: float = 0.0, image_size: int = 50, in_channels: int = 3):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 32, 5, padding=2), nn.MaxPool2d(3, 2, ceil_mode=True), nn.ReLU(inplace=True),
            nn.Conv2d(32, 32, 5, padding=2), nn.ReLU(inplace=True), nn.AvgPool2d(3, 2, ceil_mode=True),
            nn.Conv2d(32, 64, 5, padding=2), nn.ReLU(inplace=True), nn.AvgPool2d(3, 2, ceil_mode=True),
        )
        size = self.features(torch.zeros(1, in_channels, image_size, image_size)).shape[-1]
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(64 * size * size, dense), nn.Dropout(dropout),
                                  nn.Linear(dense, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return in_float32(self.head, self.features(x)).squeeze(1)
