"""Cache build speed: images/s decoding with all cores vs a single process (the decode itself: the
file index and cache key are computed once, before timing).

python bench/cache_build.py [--dataset synthetic|sample]
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path

from benchdata import arguments, dataset_root

from idclab.data.cache import build
from idclab.data.layout import scan


def build_speed(index, workers: int) -> float:
    folder = Path(tempfile.mkdtemp(prefix="idclab-cache-bench-"))
    try:
        start = time.perf_counter()
        build(index, folder / "bench.npy", folder / "bench.json", "bench", workers)
        return len(index) / (time.perf_counter() - start)
    finally:
        shutil.rmtree(folder)


def main() -> None:
    args = arguments(__doc__)
    index = scan(dataset_root(args))
    cores = os.cpu_count() or 1
    build_speed(index, 1)  # warm the page cache so both runs read the PNGs from memory
    single, parallel = build_speed(index, 1), build_speed(index, cores)
    print(f"\nCache build on {args.dataset} ({len(index)} patches)")
    print(f"{'processes':>9} {'images/s':>10}")
    print(f"{1:>9} {single:>10.0f}\n{cores:>9} {parallel:>10.0f}")
    print(f"SUMMARY cache build: {cores} processes / 1 process = {parallel / single:.2f}x (target >= 1.7x on 2 cores)")


if __name__ == "__main__":
    main()
