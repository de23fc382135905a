"""From a data config to train/val/test DataLoaders over the packed cache."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import (
    BatchSampler,
    DataLoader,
    Dataset,
    Sampler,
    SequentialSampler,
    get_worker_info,
)

from idclab.data.augment import Augmentation
from idclab.data.cache import PatchCache, check_bad_patches, load_or_build
from idclab.data.layout import DataLayoutError, PatchIndex, require_root, scan
from idclab.data.neighbourhood import check_rings, coarse_views, neighbour_rows
from idclab.data.sampling import Shuffle
from idclab.data.split import EXTERNAL_PREFIX, SPLITS, PatientSplit, make_split
from idclab.data.synthetic import SyntheticSpec, generate


@dataclass
class PreparedData:
    """A scanned, decoded and split dataset: everything a DataModule serves from."""

    source: str
    index: PatchIndex
    cache: PatchCache
    split: PatientSplit

    def summary(self) -> dict[str, Any]:
        """Facts to print and log: counts per class and split, skipped files, patients per split."""
        counts = {s: dict(zip(("negative", "positive"), self.index.class_counts(rows), strict=True))
                  for s, rows in self.split.rows.items()}
        return {
            "source": self.source,
            "root": str(self.index.root),
            "cache_key": self.cache.key,
            "content": self.cache.content,
            "patches": len(self.index),
            "class_counts": dict(zip(("negative", "positive"), self.index.class_counts(), strict=True)),
            "split_counts": counts,
            "decode_status": self.cache.counts(),
            "skipped_files": dict(self.index.skipped),
            "patients": {s: list(p) for s, p in self.split.patients.items()},
            "split_notes": self.split.notes,
        }

    def record(self) -> dict[str, Any]:
        """What a checkpoint records of its data (plain values): the patient ids of each split, and a
        fingerprint (cache key, content digest, patches per split) to tell whether the data changed since."""
        return {"split_patients": {s: [str(p) for p in names] for s, names in self.split.patients.items()},
                "data_fingerprint": {"cache_key": self.cache.key, "content": self.cache.content,
                                     "patches": {s: int(len(rows)) for s, rows in self.split.rows.items()}}}


def same_data(recorded: object, now: dict[str, Any]) -> bool:
    """Whether two data fingerprints (`PreparedData.record`) are of the same pixels and labels, split into as many
    patches: the content digest, not the cache key, which changes with the files' times and place (a fresh copy);
    a record made before content digests has only its cache key to tell."""
    return isinstance(recorded, dict) and not fingerprint_changes(recorded, now)


def identity_key(recorded: dict[str, Any]) -> str:
    """The field of a data fingerprint that names its data: the content digest, or the cache key of a fingerprint
    recorded before content digests."""
    return "content" if "content" in recorded else "cache_key"


def fingerprint_changes(recorded: dict[str, Any], now: dict[str, Any]) -> list[str]:
    """How data fingerprinted `now` differs from a recorded fingerprint, as `what old -> new` (none: the same)."""
    field = identity_key(recorded)
    return [f"{name} {recorded.get(key)} -> {now[key]}" for key, name in
            ((field, field.replace("_", " ")), ("patches", "patches per split")) if recorded.get(key) != now[key]]


def resolve_root(data_cfg: Any) -> Path:
    """The folder to scan: the user's root for real data, or the generated synthetic set."""
    if data_cfg.source == "synthetic":
        spec = SyntheticSpec(**data_cfg.synthetic)
        return generate(data_cfg.generated_dir, spec)
    return require_root(data_cfg.root)


def prepare_data(data_cfg: Any, split_cfg: Any, required: tuple[str, ...] = SPLITS, root: Path | None = None
                 ) -> PreparedData:
    """Scan, decode (once, into the cache) and split the dataset a data and a split config describe.

    `required`: the splits that must hold patches (cross-validation needs no held-out test split, the folds give
    the estimate; evaluation needs only the splits it uses); `root` scans that folder instead of the config's
    (evaluation on data moved since training).
    """
    index = scan(root or resolve_root(data_cfg), strict=data_cfg.strict)
    options = {k: v for k, v in split_cfg.items() if k not in ("name", "root")}
    if split_cfg.get("root"):
        index = index.merged_with(scan(split_cfg.root, strict=data_cfg.strict), EXTERNAL_PREFIX)
    cache = load_or_build(index, data_cfg.cache_dir, data_cfg.get("decode_workers"))
    check_bad_patches(index, cache, strict=data_cfg.strict)
    usable = np.flatnonzero(cache.usable)
    split = make_split(index.patients[usable], index.labels[usable], split_cfg.name, **options)
    split.rows = {s: usable[rows] for s, rows in split.rows.items()}
    for name, rows in split.rows.items():
        if rows.size == 0 and name in required:
            raise DataLayoutError(f"the {name} split is empty: add patients or change the split settings")
    return PreparedData(source=data_cfg.source, index=index, cache=cache, split=split)


class PatchBatches(Dataset):
    """Whole batches from the cache: item `[i, j, ...]` is (uint8 N x C x 50 x 50 tensor, float labels,
    int64 index rows), the rows naming each patch so predictions are matched to patches by row, not position.

    Rows are read from the memory map in sorted order (one fancy-indexing copy per batch), then
    augmented per patch (albumentations) and/or per batch (tensor ops). With `views` (each index row's
    neighbourhood views, `idclab.data.neighbourhood.coarse_views`), C = 3 + 3 per view: the patch, then its views.
    """

    def __init__(self, images: np.ndarray, labels: np.ndarray, rows: np.ndarray,
                 augmentation: Augmentation | None = None, views: Sequence[np.ndarray] = ()):
        self.images = images
        self.labels = labels
        self.rows = rows
        self.augmentation = augmentation or Augmentation()
        self.views = views
        self._seeded_for: int | None = None

    def __len__(self) -> int:
        return len(self.rows)

    def _seed_per_sample_augmentation(self) -> None:
        """albumentations keeps its own RNG: seed it from torch's per-process seed (set by
        `seed_everything`, distinct in each DataLoader worker) so runs are reproducible."""
        worker = get_worker_info()
        process = worker.id if worker else -1
        if self._seeded_for != process:
            self.augmentation.per_sample.set_random_seed(torch.initial_seed() % 2**32)
            self._seeded_for = process

    def __getitem__(self, positions: list[int]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        rows = self.rows[np.asarray(positions)]
        order = np.argsort(rows, kind="stable")
        sources = [self.images, *self.views]
        pixels = np.empty((len(rows), *self.images.shape[1:3], sum(s.shape[-1] for s in sources)), dtype=np.uint8)
        channel = 0
        for source in sources:  # each read in row order, into its channels
            pixels[order, ..., channel:channel + source.shape[-1]] = source[rows[order]]
            channel += source.shape[-1]
        if self.augmentation.per_sample is not None:
            self._seed_per_sample_augmentation()
            for i in range(len(pixels)):
                pixels[i] = self.augmentation.per_sample(image=pixels[i])["image"]
        batch = torch.from_numpy(pixels).permute(0, 3, 1, 2)
        if self.augmentation.per_batch is not None:
            batch = self.augmentation.per_batch(batch)
        return batch, torch.from_numpy(self.labels[rows].astype(np.float32)), torch.from_numpy(rows.astype(np.int64))


class EpochBatchSampler(BatchSampler):
    """A BatchSampler that passes `set_epoch` on to its sampler (so re-samplers redraw every epoch)."""

    def set_epoch(self, epoch: int) -> None:
        if hasattr(self.sampler, "set_epoch"):
            self.sampler.set_epoch(epoch)


def channel_stats(images: np.ndarray, rows: np.ndarray, seed: int, max_rows: int = 20000) -> tuple[list, list]:
    """Per-channel mean and std (in [0, 1] units) of a sample of training patches."""
    rng = np.random.default_rng(seed)
    pick = np.sort(rng.choice(rows, size=min(max_rows, len(rows)), replace=False))
    pixels = np.asarray(images[pick], dtype=np.float64) / 255.0
    return pixels.mean(axis=(0, 1, 2)).tolist(), (pixels.std(axis=(0, 1, 2)) + 1e-6).tolist()


class PatchDataModule(pl.LightningDataModule):
    """Serves train (augmented, optionally re-sampled), val and test patches from the cache; with `neighbourhood`
    (`data.neighbourhood`: rings, or a list of them), each with its neighbourhood views (3 more channels each,
    `idclab.data.neighbourhood`)."""

    def __init__(self, data: PreparedData, batch_size: int, num_workers: int = 0,
                 augmentation: Augmentation | None = None,
                 sampler_factory: Callable[[np.ndarray, int], Sampler | None] | None = None, seed: int = 0,
                 neighbourhood: int | Sequence[int] = 0):
        super().__init__()
        self.data = data
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.augmentation = augmentation
        self.sampler_factory = sampler_factory
        self.seed = seed
        self.neighbourhood = check_rings(neighbourhood)

    @property
    def views(self) -> tuple[np.ndarray, ...]:
        """Each index row's neighbourhood views (N x 50 x 50 x 3 per ring count), none without `neighbourhood`:
        each built on first use and kept with the cache, so folds and ensemble members over the same data build
        it once."""
        cache, index = self.data.cache, self.data.index
        for rings in self.neighbourhood:
            if rings not in cache.views:
                cells = neighbour_rows(index.patients, index.xs, index.ys, rings, cache.usable)
                cache.views[rings] = coarse_views(cache.images, cells)
        return tuple(cache.views[rings] for rings in self.neighbourhood)

    def train_class_counts(self) -> list[int]:
        """Negative and positive patch counts in the training split."""
        return self.data.index.class_counts(self.data.split.rows["train"])

    def dataset(self, split: str, train: bool = False) -> PatchBatches:
        """The batch dataset of one split; `train=True` applies the augmentation."""
        return PatchBatches(self.data.cache.images, self.data.index.labels, self.data.split.rows[split],
                            self.augmentation if train else None, self.views)

    def _loader(self, dataset: PatchBatches, sampler: Sampler) -> DataLoader:
        batches = EpochBatchSampler(sampler, self.batch_size, drop_last=False)
        return DataLoader(dataset, sampler=batches, batch_size=None, num_workers=self.num_workers,
                          persistent_workers=self.num_workers > 0, pin_memory=torch.cuda.is_available())

    def train_dataloader(self) -> DataLoader:
        dataset = self.dataset("train", train=True)
        labels = self.data.index.labels[dataset.rows]
        sampler = self.sampler_factory(labels, self.seed) if self.sampler_factory else None
        return self._loader(dataset, sampler if sampler is not None else Shuffle(len(dataset), self.seed))

    def val_dataloader(self) -> DataLoader:
        dataset = self.dataset("val")
        return self._loader(dataset, SequentialSampler(dataset))

    def test_dataloader(self) -> DataLoader:
        dataset = self.dataset("test")
        return self._loader(dataset, SequentialSampler(dataset))
