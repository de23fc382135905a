"""Samplers that re-balance the classes seen in training, chosen by the `sampler` config group."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
import torch
from imblearn.over_sampling import RandomOverSampler
from imblearn.under_sampling import RandomUnderSampler
from torch.utils.data import Sampler, WeightedRandomSampler


def no_sampler(labels: np.ndarray, seed: int) -> None:
    """Plain shuffling (`Shuffle`, the DataModule's default), class balance as in the data."""
    return None


class Shuffle(Sampler[int]):
    """A permutation of `size` indices drawn anew every epoch from `seed + epoch` alone: every DDP process draws
    the same one (whatever else used the global random state), and a resumed run the one it would have drawn."""

    def __init__(self, size: int, seed: int):
        self.size = size
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Called by Lightning (through `EpochBatchSampler`) before each epoch."""
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        return iter(np.random.default_rng(self.seed + self.epoch).permutation(self.size).tolist())

    def __len__(self) -> int:
        return self.size


def weighted(labels: np.ndarray, seed: int) -> WeightedRandomSampler:
    """Draw patches, with replacement, with probability inversely proportional to their class frequency (without
    replacement an epoch would draw every patch once: a shuffle, not a balance)."""
    counts = np.bincount(labels, minlength=2).astype(np.float64)
    weights = 1.0 / counts[labels]
    generator = torch.Generator().manual_seed(seed)
    return WeightedRandomSampler(torch.as_tensor(weights), num_samples=len(labels), replacement=True,
                                 generator=generator)


class ImbalancedLearnSampler(Sampler[int]):
    """Indices re-drawn every epoch by an imbalanced-learn random over- or under-sampler.

    The resampler runs on the row indices (not the images), seeded with `seed + epoch`, so each
    epoch sees a different draw and a resumed run sees the same draws.
    """

    def __init__(self, labels: np.ndarray, seed: int, method: str, sampling_strategy: str | float = "auto"):
        if method not in ("over", "under"):
            raise ValueError(f"method must be 'over' or 'under', got {method!r}")
        self.labels = np.asarray(labels)
        self.seed = seed
        self.method = method
        self.sampling_strategy = sampling_strategy
        self.epoch = 0
        self._length = len(self._draw(0))

    def _draw(self, epoch: int) -> np.ndarray:
        cls = RandomOverSampler if self.method == "over" else RandomUnderSampler
        resampler = cls(sampling_strategy=self.sampling_strategy, random_state=self.seed + epoch)
        rows, _ = resampler.fit_resample(np.arange(len(self.labels)).reshape(-1, 1), self.labels)
        rows = rows.ravel()
        np.random.default_rng(self.seed + epoch).shuffle(rows)
        return rows

    def set_epoch(self, epoch: int) -> None:
        """Called by Lightning before each epoch."""
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        return iter(self._draw(self.epoch).tolist())

    def __len__(self) -> int:
        return self._length


def oversample(labels: np.ndarray, seed: int, sampling_strategy: str | float = "auto") -> ImbalancedLearnSampler:
    """Random over-sampling of the minority class (imbalanced-learn), redrawn every epoch."""
    return ImbalancedLearnSampler(labels, seed, "over", sampling_strategy)


def undersample(labels: np.ndarray, seed: int, sampling_strategy: str | float = "auto") -> ImbalancedLearnSampler:
    """Random under-sampling of the majority class (imbalanced-learn), redrawn every epoch."""
    return ImbalancedLearnSampler(labels, seed, "under", sampling_strategy)


SamplerFactory = Callable[[np.ndarray, int], Sampler | None]


class DeferredSampler(Sampler[int]):
    """Deferred re-sampling (DRW, Cao et al. 2019): plain uniform shuffling before `start_epoch`, the
    balancing `sampler` from it on.

    Every epoch has the balancing sampler's length (Lightning counts an epoch's batches once, and step
    schedules need a fixed number of steps), so before the switch an epoch is a uniform draw of that many
    patches: a seeded permutation, repeated or cut to length.
    """

    def __init__(self, sampler: Sampler[int], size: int, start_epoch: int, seed: int):
        self.sampler = sampler
        self.size = size
        self.start_epoch = start_epoch
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Called by Lightning (through `EpochBatchSampler`) before each epoch."""
        self.epoch = epoch
        if hasattr(self.sampler, "set_epoch"):
            self.sampler.set_epoch(epoch)

    def balancing(self) -> bool:
        """True from the start epoch on."""
        return self.epoch >= self.start_epoch

    def __iter__(self) -> Iterator[int]:
        if self.balancing():
            return iter(self.sampler)
        rng = np.random.default_rng(self.seed + self.epoch)
        repeats = -(-len(self) // self.size)
        rows = np.concatenate([rng.permutation(self.size) for _ in range(repeats)])[: len(self)]
        return iter(rows.tolist())

    def __len__(self) -> int:
        return len(self.sampler)


def deferred(factory: SamplerFactory, start_epoch: int | None) -> SamplerFactory:
    """`factory`, with its balancing sampler deferred to `start_epoch` (None: not deferred)."""
    if start_epoch is None:
        return factory

    def build(labels: np.ndarray, seed: int) -> Sampler | None:
        sampler = factory(labels, seed)
        return None if sampler is None else DeferredSampler(sampler, len(labels), start_epoch, seed)

    return build
