"""The packed patch cache: every PNG decoded once into one memory-mapped uint8 array.

`<cache_dir>/<key>.npy` holds N x 50 x 50 x 3 pixels in the index's order and `<key>.json` the decode
status of each row. The key hashes the file list with sizes and modification times and the fill rule,
so a changed dataset gets a new cache and an unchanged one is never rebuilt. A build writes temporary
files renamed at the end, under a lock, so a killed build leaves no corrupt cache and parallel sweep
jobs build it once.
"""

from __future__ import annotations

import json
import logging
import os
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from idclab.data.decode import PAD_VALUE, PATCH_SIZE, PatchStatus, decode_patch
from idclab.data.layout import PatchIndex
from idclab.fileutil import file_lock, stable_hash

log = logging.getLogger(__name__)
CACHE_FORMAT = 1
CHUNK = 1024


class BadPatchError(RuntimeError):
    """Raised in strict mode when some patch files cannot be used."""


@dataclass
class PatchCache:
    """Decoded pixels of an index, memory-mapped, with each row's decode status."""

    key: str
    images: np.ndarray  # N x 50 x 50 x 3 uint8, memory-mapped read-only
    status: np.ndarray  # N strings, PatchStatus values

    @property
    def usable(self) -> np.ndarray:
        """Boolean mask of rows that decoded (possibly padded)."""
        return np.isin(self.status, [PatchStatus.OK.value, PatchStatus.PADDED.value])

    def counts(self) -> dict[str, int]:
        """How many rows got each status."""
        return dict(Counter(self.status.tolist()))


def cache_key(index: PatchIndex) -> str:
    """Hash of the files (names, sizes, mtimes) and the decoding rule the cache is built from."""
    stats = []
    for rel in index.paths:
        st = os.stat(index.root / rel)
        stats.append((rel, st.st_size, st.st_mtime_ns))
    return stable_hash({"root": str(index.root), "files": stats, "fill": PAD_VALUE,
                        "size": PATCH_SIZE, "format": CACHE_FORMAT}, length=16)


def _decode_chunk(job: tuple[Path, int, list[str]]) -> list[str]:
    """Decode `paths` straight into rows `start...` of the (partial) cache file; return their statuses."""
    npy, start, paths = job
    images = np.load(npy, mmap_mode="r+")
    status = []
    for i, path in enumerate(paths, start):
        array, state = decode_patch(path)
        images[i] = array if array is not None else PAD_VALUE
        status.append(state.value)
    images.flush()
    return status


def build(index: PatchIndex, npy: Path, meta: Path, key: str, workers: int) -> None:
    """Decode every patch of `index` into `npy` (+ statuses in `meta`) with `workers` processes.

    Writes `*.partial` files and renames them at the end; callers hold the cache lock.
    """
    n = len(index)
    tmp_npy, tmp_meta = npy.with_suffix(".npy.partial"), meta.with_suffix(".json.partial")
    np.lib.format.open_memmap(tmp_npy, mode="w+", dtype=np.uint8, shape=(n, PATCH_SIZE, PATCH_SIZE, 3)).flush()
    jobs = [(tmp_npy, i, [str(index.root / p) for p in index.paths[i:i + CHUNK]]) for i in range(0, n, CHUNK)]
    status: list[str] = []
    with tqdm(total=n, desc=f"Decoding {n} patches into the cache", unit="img") as bar:
        if workers > 1 and len(jobs) > 1:
            with ProcessPoolExecutor(workers) as pool:
                for states in pool.map(_decode_chunk, jobs):
                    status.extend(states)
                    bar.update(len(states))
        else:
            for job in jobs:
                status.extend(_decode_chunk(job))
                bar.update(len(job[2]))
    tmp_meta.write_text(json.dumps({"key": key, "paths": index.paths, "status": status}))
    os.replace(tmp_npy, npy)
    os.replace(tmp_meta, meta)  # the metadata file marks the cache complete


def load_or_build(index: PatchIndex, cache_dir: str | Path, workers: int | None = None) -> PatchCache:
    """Return the cache for `index`, building it first if no valid one exists."""
    cache_dir = Path(cache_dir).expanduser().resolve()
    cache_dir.mkdir(parents=True, exist_ok=True)
    key = cache_key(index)
    npy, meta = cache_dir / f"{key}.npy", cache_dir / f"{key}.json"
    if not meta.exists():
        with file_lock(cache_dir / f"{key}.lock"):
            if not meta.exists():
                build(index, npy, meta, key, workers or os.cpu_count() or 1)
    info = json.loads(meta.read_text())
    images = np.load(npy, mmap_mode="r")
    if images.shape[0] != len(index) or info["paths"] != index.paths:
        raise RuntimeError(f"Patch cache {npy} does not match the data index; delete it to rebuild.")
    return PatchCache(key=key, images=images, status=np.array(info["status"]))


def check_bad_patches(index: PatchIndex, cache: PatchCache, strict: bool) -> None:
    """Warn about (or, in strict mode, fail on) files that could not be decoded."""
    bad = np.flatnonzero(~cache.usable)
    if bad.size == 0:
        return
    listing = "\n".join(f"  {index.paths[i]} ({cache.status[i]})" for i in bad[:20])
    more = f"\n  ... and {bad.size - 20} more" if bad.size > 20 else ""
    message = f"{bad.size} patch file(s) under {index.root} could not be used:\n{listing}{more}"
    if strict:
        raise BadPatchError(message + "\n(data.strict=true; set data.strict=false to skip them)")
    log.warning("%s\nThey are skipped (data.strict=false).", message)
