"""Stain normalisation, chosen by the `stain` config group: none, reinhard or macenko.

A normaliser is part of the model's preprocessing (`IDCClassifier.forward`), so training, validation,
testing, evaluation and prediction all see the same colours. It is fitted once on a sample of training
patches (`fit_stain`) and keeps its target in buffers, i.e. plain tensors in the checkpoint's state dict.

The math is batched torch on N x 3 x H x W float images in [0, 1], on any device (torchstain's torch
backend normalises one C x H x W image at a time, with a Python loop and host syncs per image).
Autocast is turned off inside: the colour math runs in float32 under mixed precision.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

# sRGB (D65) <-> CIE XYZ, and the D65 white point (the constants of skimage and torchstain)
RGB_TO_XYZ = torch.tensor([[0.412453, 0.357580, 0.180423],
                           [0.212671, 0.715160, 0.072169],
                           [0.019334, 0.119193, 0.950227]])
WHITE = torch.tensor([0.95047, 1.0, 1.08883])
# Macenko's reference H&E stain vectors (columns, optical density per RGB channel) and 99th-percentile
# concentrations, as in the original code and torchstain: the target before `fit`.
HE_REFERENCE = [[0.5626, 0.2159], [0.7201, 0.8012], [0.4062, 0.5581]]
MAX_CONCENTRATION_REFERENCE = [1.9705, 1.0308]
LIGHT = 240.0  # transmitted light intensity Io of Macenko's optical densities
MIN_TISSUE = 0.05  # Macenko leaves a patch unchanged when fewer of its pixels than this are stained


# f(X/Xn), f(Y/Yn), f(Z/Zn) -> L*, a*, b* is linear: lab = F_TO_LAB @ f + (-16, 0, 0)
F_TO_LAB = torch.tensor([[0.0, 116.0, 0.0], [500.0, -500.0, 0.0], [0.0, 200.0, -200.0]])
LAB_OFFSET = torch.tensor([-16.0, 0.0, 0.0])
LAB_TO_F = torch.linalg.inv(F_TO_LAB)
XYZ_TO_RGB = torch.linalg.inv(RGB_TO_XYZ)


def _mix(matrix: torch.Tensor, images: torch.Tensor, offset: torch.Tensor | None = None) -> torch.Tensor:
    """`matrix` (3 x 3) applied to the channel vector of every pixel of N x 3 x H x W images, plus `offset`."""
    mixed = matrix.to(images) @ images.flatten(2)
    if offset is not None:
        mixed = mixed + offset.to(images).view(3, 1)
    return mixed.view_as(images)


def rgb_to_lab(rgb: torch.Tensor) -> torch.Tensor:
    """CIE L*a*b* (L in [0, 100]) of N x 3 x H x W sRGB images in [0, 1]."""
    linear = torch.where(rgb > 0.04045, ((rgb + 0.055) / 1.055) ** 2.4, rgb / 12.92)
    xyz = _mix(RGB_TO_XYZ / WHITE.view(3, 1), linear)
    f = torch.where(xyz > 0.008856, xyz.clamp_min(0.008856) ** (1 / 3), 7.787 * xyz + 16 / 116)
    return _mix(F_TO_LAB, f, LAB_OFFSET)


def lab_to_rgb(lab: torch.Tensor) -> torch.Tensor:
    """sRGB images in [0, 1] (clipped) of N x 3 x H x W CIE L*a*b* images."""
    f = _mix(LAB_TO_F, lab - LAB_OFFSET.to(lab).view(1, 3, 1, 1))
    xyz = torch.where(f > 0.2068966, f ** 3, (f - 16 / 116) / 7.787)
    linear = _mix(XYZ_TO_RGB * WHITE, xyz)
    rgb = torch.where(linear > 0.0031308, 1.055 * linear.clamp_min(0.0031308) ** (1 / 2.4) - 0.055, 12.92 * linear)
    return rgb.clamp(0, 1)


def _nearest_rank(values: torch.Tensor, mask: torch.Tensor, quantile: float) -> torch.Tensor:
    """Per row (last dimension) of `values`, the `quantile` of the entries where `mask` holds, by nearest
    rank as torchstain's percentile; a partial sort (top-k) from the nearer end instead of a full sort."""
    count = mask.sum(-1)
    rank = torch.round(quantile * (count - 1)).long().clamp_min(0)
    low = quantile <= 0.5
    position = rank if low else (count - 1 - rank).clamp_min(0)
    bound = min(values.shape[-1], round(min(quantile, 1 - quantile) * (values.shape[-1] - 1)) + 2)
    masked = values.masked_fill(~mask, torch.inf if low else -torch.inf)
    nearest = masked.topk(bound, dim=-1, largest=not low).values
    return nearest.gather(-1, position.unsqueeze(-1)).squeeze(-1)


class StainNormaliser(nn.Module):
    """Base class: `fit` sets the target from a batch of training patches, `forward` normalises a batch."""

    def __init__(self, sample: int = 1000):
        super().__init__()
        if sample < 1:
            raise ValueError(f"stain.sample must be >= 1, got {sample}")
        self.sample = sample

    def fit(self, images: torch.Tensor) -> None:
        """Set the target from N x 3 x H x W float training patches in [0, 1]."""

    def normalise(self, images: torch.Tensor) -> torch.Tensor:
        return images

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        with torch.autocast(images.device.type, enabled=False):
            return self.normalise(images.float())


class NoStain(StainNormaliser):
    """No stain normalisation (the default)."""


class Reinhard(StainNormaliser):
    """Reinhard et al. 2001: each patch's L*a*b* channels are standardised and given the target's mean and
    std (the medians, over the fitted training patches, of the per-patch means and stds)."""

    def __init__(self, sample: int = 1000):
        super().__init__(sample)
        self.register_buffer("target_mean", torch.tensor([50.0, 0.0, 0.0]))
        self.register_buffer("target_std", torch.ones(3))

    @staticmethod
    def statistics(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """L*a*b* pixels (N x 3 x P) and their per-patch mean and std (N x 3 x 1)."""
        lab = rgb_to_lab(images).flatten(2)
        return lab, lab.mean(-1, keepdim=True), lab.std(-1, keepdim=True)

    def fit(self, images: torch.Tensor) -> None:
        _, mean, std = self.statistics(images.float())
        self.target_mean.copy_(mean.squeeze(-1).median(0).values)
        self.target_std.copy_(std.squeeze(-1).median(0).values)

    def normalise(self, images: torch.Tensor) -> torch.Tensor:
        lab, mean, std = self.statistics(images)
        scale = self.target_std.view(1, 3, 1) / std.clamp_min(1e-3)
        shift = self.target_mean.view(1, 3, 1) - mean * scale
        return lab_to_rgb((lab * scale + shift).view_as(images))


class Macenko(StainNormaliser):
    """Macenko et al. 2009, per patch: optical densities, the plane of their two main eigenvectors, the
    extreme angles (percentiles `alpha`, 100 - `alpha`) as H and E stain vectors, stain concentrations by
    least squares scaled to the target's 99th percentiles, and re-rendering with the target stain vectors.

    Pixels whose optical density is below `beta` in any channel (background) do not enter the stain
    vectors. The target is the median, over the fitted training patches with enough stained pixels, of the
    per-patch stain vectors and 99th-percentile concentrations. Patches with fewer than 5% stained pixels
    are left unchanged.
    """

    def __init__(self, sample: int = 1000, alpha: float = 1.0, beta: float = 0.15):
        super().__init__(sample)
        if not 0 <= alpha < 50:
            raise ValueError(f"stain.alpha must be in [0, 50), got {alpha}")
        if beta <= 0:
            raise ValueError(f"stain.beta must be > 0, got {beta}")
        self.alpha = alpha
        self.beta = beta
        self.register_buffer("stain_vectors", torch.tensor(HE_REFERENCE))
        self.register_buffer("max_concentrations", torch.tensor(MAX_CONCENTRATION_REFERENCE))

    def stains(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Per patch: stain vectors (N x 3 x 2, H first), concentrations (N x 2 x P), 99th-percentile
        concentrations (N x 2), and whether the patch has enough stain to be normalised (N)."""
        density = -torch.log((images.flatten(2) * 255 + 1) / LIGHT)
        pixels = density.shape[-1]
        stained = (density >= self.beta).all(1)
        count = stained.sum(1)
        enough = count >= MIN_TISSUE * pixels
        weight = stained.unsqueeze(1).to(density)
        mean = (density * weight).sum(-1, keepdim=True) / count.clamp_min(1).view(-1, 1, 1)
        centred = (density - mean) * weight
        covariance = centred @ centred.transpose(1, 2) / (count - 1).clamp_min(1).view(-1, 1, 1)
        plane = torch.linalg.eigh(covariance).eigenvectors[:, :, 1:]  # the two largest eigenvalues
        plane = plane * torch.where(plane.sum(1, keepdim=True) < 0, -1.0, 1.0)  # point into positive density
        projected = plane.transpose(1, 2) @ density
        angle = torch.atan2(projected[:, 1], projected[:, 0])
        low = torch.where(enough, _nearest_rank(angle, stained, self.alpha / 100), 0.0)
        high = torch.where(enough, _nearest_rank(angle, stained, 1 - self.alpha / 100), 0.0)
        v_low = (plane @ torch.stack([low.cos(), low.sin()], 1).unsqueeze(-1)).squeeze(-1)
        v_high = (plane @ torch.stack([high.cos(), high.sin()], 1).unsqueeze(-1)).squeeze(-1)
        low_first = (v_low[:, 0] > v_high[:, 0]).view(-1, 1, 1)
        vectors = torch.where(low_first, torch.stack([v_low, v_high], 2), torch.stack([v_high, v_low], 2))
        finite = torch.isfinite(vectors).flatten(1).all(1)
        vectors = torch.where(finite.view(-1, 1, 1), vectors, self.stain_vectors)
        concentrations = torch.linalg.pinv(vectors) @ density
        maxima = _nearest_rank(concentrations, torch.ones_like(concentrations, dtype=torch.bool), 0.99)
        usable = enough & finite & (maxima > 1e-6).all(1)
        return vectors, concentrations, maxima, usable

    def fit(self, images: torch.Tensor) -> None:
        vectors, _, maxima, usable = self.stains(images.float())
        if not usable.any():
            raise ValueError("stain=macenko: no training patch in the fitting sample has enough stained pixels")
        target = vectors[usable].median(0).values
        self.stain_vectors.copy_(target / target.norm(dim=0, keepdim=True))
        self.max_concentrations.copy_(maxima[usable].median(0).values)

    def normalise(self, images: torch.Tensor) -> torch.Tensor:
        _, concentrations, maxima, usable = self.stains(images)
        scaled = concentrations * (self.max_concentrations / maxima.clamp_min(1e-6)).unsqueeze(-1)
        rendered = (LIGHT * torch.exp(-self.stain_vectors @ scaled)).clamp(max=255) / 255
        return torch.where(usable.view(-1, 1, 1, 1), rendered.view_as(images), images)


def none() -> StainNormaliser:
    """No stain normalisation."""
    return NoStain()


def reinhard(sample: int = 1000) -> StainNormaliser:
    """Reinhard colour transfer in L*a*b*, fitted on `sample` training patches."""
    return Reinhard(sample)


def macenko(sample: int = 1000, alpha: float = 1.0, beta: float = 0.15) -> StainNormaliser:
    """Macenko H&E stain normalisation, fitted on `sample` training patches."""
    return Macenko(sample, alpha, beta)


def fit_stain(normaliser: StainNormaliser, images: np.ndarray, rows: np.ndarray, seed: int) -> None:
    """Fit `normaliser` on a seeded sample of the training rows of a uint8 N x H x W x 3 image array."""
    if isinstance(normaliser, NoStain):
        return
    rng = np.random.default_rng(seed)
    pick = np.sort(rng.choice(rows, size=min(normaliser.sample, len(rows)), replace=False))
    batch = torch.from_numpy(np.asarray(images[pick])).permute(0, 3, 1, 2).float() / 255
    normaliser.fit(batch)
