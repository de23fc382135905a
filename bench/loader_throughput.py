"""Loader throughput (images/s, augment=basic, no model): naive PNG decoding every epoch vs the cache, then the
cost of the neighbourhood view (`data.neighbourhood` 0 to 3) as a ratio to the patch alone, same run.

python bench/loader_throughput.py [--dataset synthetic|sample]
"""

from __future__ import annotations

import time

import numpy as np
import torch
from benchdata import arguments, indexed
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from idclab.data.augment import basic
from idclab.data.datamodule import PatchDataModule, PreparedData
from idclab.data.decode import pad_to_patch
from idclab.data.neighbourhood import MAX_RINGS
from idclab.data.split import PatientSplit

BATCH = 128


class NaivePNGDataset(Dataset):
    """torchvision ImageFolder-style: open, convert and transform one PNG per item with PIL."""

    def __init__(self, paths: list[str], labels: np.ndarray):
        self.paths, self.labels = paths, labels
        self.transform = basic(batched=False).per_sample

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        with Image.open(self.paths[i]) as image:
            array = pad_to_patch(np.asarray(image.convert("RGB")))
        array = self.transform(image=array)["image"]
        return torch.from_numpy(np.ascontiguousarray(array.transpose(2, 0, 1))), float(self.labels[i])


def images_per_second(loader: DataLoader, limit: int) -> float:
    seen, start = 0, time.perf_counter()
    for batch in loader:  # (images, labels) from the naive loader, (images, labels, rows) from the cache
        seen += len(batch[0])
        if seen >= limit:
            break
    return seen / (time.perf_counter() - start)


def main() -> None:
    args = arguments(__doc__)
    index, cache = indexed(args)
    rows = np.arange(len(index))
    split = PatientSplit({"train": [], "val": [], "test": []}, {"train": rows, "val": rows, "test": rows})
    data = PreparedData("bench", index, cache, split)
    limit = min(len(index), 20000)
    table = []
    for workers in (0, 2):
        naive = DataLoader(NaivePNGDataset([str(index.root / p) for p in index.paths], index.labels),
                           batch_size=BATCH, shuffle=True, num_workers=workers)
        table.append(("naive PNG + albumentations", workers, images_per_second(naive, limit)))
        for batched in (False, True):
            module = PatchDataModule(data, BATCH, workers, augmentation=basic(batched=batched))
            name = "cache + " + ("per-batch tensor flips/rot90" if batched else "per-patch albumentations")
            table.append((name, workers, images_per_second(module.train_dataloader(), limit)))
    print(f"\nLoader throughput on {args.dataset} ({len(index)} patches, {limit} per measurement, batch {BATCH})")
    print(f"{'loader':<46} {'workers':>7} {'images/s':>10}")
    for name, workers, speed in table:
        print(f"{name:<46} {workers:>7} {speed:>10.0f}")
    naive_best = max(s for n, _, s in table if n.startswith("naive"))
    cache_best = max(s for n, _, s in table if n.startswith("cache"))
    print(f"SUMMARY loader: cache {cache_best:.0f} img/s vs naive {naive_best:.0f} img/s = "
          f"{cache_best / naive_best:.1f}x (target >= 10x)")
    print("\nNeighbourhood view (cache + per-batch flips, 0 workers): views built once per dataset ((2r+1)^2 reads "
          "per patch), then served like the patch")
    alone = None
    for rings in range(MAX_RINGS + 1):
        module = PatchDataModule(data, BATCH, 0, augmentation=basic(batched=True), neighbourhood=rings)
        start = time.perf_counter()
        _ = module.views
        built = time.perf_counter() - start
        speed = images_per_second(module.train_dataloader(), limit)
        alone = alone or speed
        building = f"built in {built:4.1f} s ({len(index) / built:>5.0f} images/s)" if rings else "no view to build"
        print(f"data.neighbourhood={rings}: {building:<34} then {speed:>7.0f} images/s, "
              f"{alone / speed:4.1f}x the patch alone's time")

if __name__ == "__main__":
    main()
