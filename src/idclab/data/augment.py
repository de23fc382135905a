"""Training-time augmentation, chosen by the `augment` config group.

An `Augmentation` has two parts: albumentations transforms applied to each patch (numpy HWC), and
transforms applied to a whole uint8 batch tensor (N x 3 x H x W) at once. Geometric augmentation
(flips, 90-degree rotations) is exact on tensors and much cheaper per batch, so it runs there by default
(`batched: true`); `batched: false` runs it through albumentations per patch instead.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass

import albumentations as A
import torch


class RandomDihedral:
    """Per patch, independently: horizontal flip (p), vertical flip (p), rotation by k x 90 degrees (k uniform).

    All 16 combinations are precomputed as pixel permutations of a square patch, so a whole batch is
    transformed by a single gather.
    """

    def __init__(self, p_flip: float = 0.5):
        self.p_flip = p_flip
        self._maps: dict[int, torch.Tensor] = {}

    def _permutations(self, size: int) -> torch.Tensor:
        if size not in self._maps:
            grid = torch.arange(size * size).view(size, size)
            maps = []
            for hflip, vflip, turns in itertools.product((False, True), (False, True), range(4)):
                moved = grid.flip(-1) if hflip else grid
                moved = moved.flip(-2) if vflip else moved
                maps.append(torch.rot90(moved, turns, dims=(-2, -1)).reshape(-1))
            self._maps[size] = torch.stack(maps)
        return self._maps[size]

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        """A transformed copy of a N x C x S x S batch."""
        n, channels, size, width = batch.shape
        if size != width:
            raise ValueError(f"RandomDihedral needs square patches, got {size}x{width}")
        hflip = (torch.rand(n) < self.p_flip).long()
        vflip = (torch.rand(n) < self.p_flip).long()
        code = hflip * 8 + vflip * 4 + torch.randint(0, 4, (n,))
        index = self._permutations(size)[code].unsqueeze(1).expand(n, channels, size * size)
        flat = batch.reshape(n, channels, size * size)
        return flat.gather(2, index).view(n, channels, size, size)


@dataclass
class Augmentation:
    """Per-patch albumentations pipeline and per-batch tensor transform; either may be None."""

    per_sample: A.Compose | None = None
    per_batch: Callable[[torch.Tensor], torch.Tensor] | None = None


def _geometric(p_flip: float) -> list[A.BasicTransform]:
    return [A.HorizontalFlip(p=p_flip), A.VerticalFlip(p=p_flip), A.RandomRotate90(p=1.0)]


def no_augmentation() -> Augmentation:
    """No augmentation: training patches are used as they are."""
    return Augmentation()


def basic(p_flip: float = 0.5, batched: bool = True) -> Augmentation:
    """Flips and 90-degree rotations: a patch has no preferred orientation."""
    if batched:
        return Augmentation(per_batch=RandomDihedral(p_flip))
    return Augmentation(per_sample=A.Compose(_geometric(p_flip)))


def stain(p_flip: float = 0.5, batched: bool = True, p_stain: float = 0.8, intensity_scale: float = 0.25,
          intensity_shift: float = 0.1, hue: float = 0.04, saturation: float = 0.15, brightness: float = 0.1,
          contrast: float = 0.1) -> Augmentation:
    """`basic` plus H&E stain jitter (HED intensity scale/shift) and a light colour jitter, per patch.

    Patients' slides differ in staining; jittering the stains teaches the model to look at
    morphology rather than colour.
    """
    colour = [
        A.HEStain(method="random_preset", intensity_scale_range=(1 - intensity_scale, 1 + intensity_scale),
                  intensity_shift_range=(-intensity_shift, intensity_shift), p=p_stain),
        A.ColorJitter(brightness=brightness, contrast=contrast, saturation=saturation, hue=hue, p=p_stain),
    ]
    if batched:
        return Augmentation(per_sample=A.Compose(colour), per_batch=RandomDihedral(p_flip))
    return Augmentation(per_sample=A.Compose(_geometric(p_flip) + colour))
