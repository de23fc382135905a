"""The packed patch cache: every PNG decoded once into one memory-mapped uint8 array.

`<cache_dir>/<key>.npy` holds N x 50 x 50 x 3 pixels in the index's order and `<key>.json` the decode status of
each row and the content digest. The key hashes the file list with sizes and modification times and the fill rule,
so a changed dataset gets a new cache and an unchanged one is never rebuilt. The content digest hashes what
training sees (file names, which carry patient and class, decode statuses and pixels), so a copy of the same data
in another place or with fresh file times has the same digest: what records of the data compare. A build writes
temporary files renamed at the end (and removed on failure), under a lock, so a killed build leaves no corrupt
cache and parallel sweep jobs build it once. Its disk space is reserved first, so a full disk fails at once; a
cache found broken later (e.g. truncated) is rebuilt.
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import shutil
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import numpy as np
from tqdm.auto import tqdm

from idclab.data.decode import PAD_VALUE, PATCH_SIZE, PatchStatus, decode_patch
from idclab.data.layout import DataLayoutError, PatchIndex
from idclab.fileutil import file_lock, stable_hash, write_json

log = logging.getLogger(__name__)
T = TypeVar("T")
CACHE_FORMAT = 1
CHUNK = 1024
NO_SPACE = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)}
CANNOT_PREALLOCATE = {errno.EOPNOTSUPP, errno.ENOTSUP, errno.EINVAL, errno.ENOSYS, errno.ENODEV}


class BadPatchError(RuntimeError):
    """Raised in strict mode when some patch files cannot be used."""


class CacheError(DataLayoutError):
    """The patch cache cannot be built or read back (e.g. a full disk); entry points print it in one line."""


@dataclass
class PatchCache:
    """Decoded pixels of an index, memory-mapped, with each row's decode status."""

    key: str
    content: str  # digest of the names, statuses and pixels: the same for a copy of the same data
    images: np.ndarray  # N x 50 x 50 x 3 uint8, memory-mapped read-only
    status: np.ndarray  # N strings, PatchStatus values
    views: dict[int, np.ndarray] = field(default_factory=dict, repr=False, compare=False)
    """Neighbourhood views of these pixels by rings, built once per process (`PatchDataModule.views`)."""

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


def reserve_space(path: Path) -> None:
    """Allocate the blocks of the (sparse) file `path` now, so a full disk fails here, not as a bus error
    (SIGBUS) in the memory map half-way through decoding; skipped where the OS or file system cannot."""
    if not hasattr(os, "posix_fallocate"):
        return
    with open(path, "r+b") as handle:
        try:
            os.posix_fallocate(handle.fileno(), 0, os.fstat(handle.fileno()).st_size)
        except OSError as error:
            if error.errno not in CANNOT_PREALLOCATE:
                raise
            log.debug("Cannot preallocate %s (%s); it is written sparse", path, error)


def create_partial(path: Path, n: int) -> None:
    """Create the N x 50 x 50 x 3 uint8 file `path` with its space reserved; CacheError on a full disk."""
    try:
        np.lib.format.open_memmap(path, mode="w+", dtype=np.uint8, shape=(n, PATCH_SIZE, PATCH_SIZE, 3)).flush()
        reserve_space(path)
    except OSError as error:
        if error.errno not in NO_SPACE:
            raise
        raise CacheError(no_space_message(path.parent, n * PATCH_SIZE * PATCH_SIZE * 3)) from error


def no_space_message(folder: Path, needed: int) -> str:
    """What to tell the user when the cache of `needed` bytes does not fit in `folder`."""
    free = shutil.disk_usage(folder).free
    return (f"Not enough disk space for the patch cache in {folder}: it needs {needed} bytes "
            f"({needed / 2**30:.2f} GiB), {free} bytes are free. "
            "Free some space or set data.cache_dir to another disk.")


def decode_all(jobs: list[tuple[Path, int, list[str]]], n: int, workers: int) -> list[str]:
    """Run the decoding jobs (in `workers` processes when worth it) with a progress bar; the row statuses."""
    status: list[str] = []
    with tqdm(total=n, desc=f"Decoding {n} patches into the cache", unit="img", disable=None) as bar:  # a terminal only
        if workers > 1 and len(jobs) > 1:
            with ProcessPoolExecutor(workers) as pool:
                for states in pool.map(_decode_chunk, jobs):
                    status.extend(states)
                    bar.update(len(states))
        else:
            for job in jobs:
                status.extend(_decode_chunk(job))
                bar.update(len(job[2]))
    return status


def build(index: PatchIndex, npy: Path, meta: Path, key: str, workers: int) -> None:
    """Decode every patch of `index` into `npy` (+ statuses in `meta`) with `workers` processes.

    Writes `*.partial` files, renamed at the end and removed on any failure; callers hold the cache lock.
    """
    n = len(index)
    tmp_npy, tmp_meta = npy.with_suffix(".npy.partial"), meta.with_suffix(".json.partial")
    try:
        create_partial(tmp_npy, n)
        jobs = [(tmp_npy, i, [str(index.root / p) for p in index.paths[i:i + CHUNK]]) for i in range(0, n, CHUNK)]
        status = decode_all(jobs, n, workers)
        content = content_digest(index.paths, status, np.load(tmp_npy, mmap_mode="r"))
        tmp_meta.write_text(json.dumps({"key": key, "content": content, "paths": index.paths, "status": status}))
        os.replace(tmp_npy, npy)
        os.replace(tmp_meta, meta)  # the metadata file marks the cache complete
    finally:
        tmp_npy.unlink(missing_ok=True)
        tmp_meta.unlink(missing_ok=True)


def content_digest(paths: list[str], status: list[str], images: np.ndarray) -> str:
    """Hash of the relative file names, decode statuses and pixels, read a chunk at a time."""
    digest = hashlib.blake2b(json.dumps([paths, status]).encode(), digest_size=8)
    for start in range(0, len(images), CHUNK):
        digest.update(np.ascontiguousarray(images[start:start + CHUNK]).data)
    return digest.hexdigest()


def read_part(path: Path, read: Callable[[Path], T]) -> T:
    """`read(path)`; CacheError naming `path` when it is missing, truncated or unreadable."""
    try:
        return read(path)
    except (OSError, ValueError, EOFError) as error:
        raise CacheError(f"Patch cache file {path} is truncated or unreadable ({error}).") from error


def read_cache(index: PatchIndex, key: str, npy: Path, meta: Path) -> PatchCache:
    """Open a built cache; CacheError naming the file when it is unreadable, truncated or not `index`'s."""
    info = read_part(meta, lambda path: json.loads(path.read_text()))
    images = read_part(npy, lambda path: np.load(path, mmap_mode="r"))
    if images.shape != (len(index), PATCH_SIZE, PATCH_SIZE, 3) or info.get("paths") != index.paths \
            or len(info.get("status", ())) != len(index):
        raise CacheError(f"Patch cache {npy} does not match the data index.")
    content = info.get("content")
    if not isinstance(content, str):  # built by an idclab before content digests: digested once, not decoded again
        content = content_digest(info["paths"], info["status"], images)
        with suppress(OSError):  # a read-only cache folder: digested again by the next reader
            write_json(meta, info | {"content": content})
    return PatchCache(key=key, content=content, images=images, status=np.array(info["status"]))


def find_cache(index: PatchIndex, key: str, npy: Path, meta: Path) -> PatchCache | None:
    """The valid cache of `index`, or None when it must be built (with a warning if a broken one is there)."""
    if not meta.exists():
        return None
    try:
        return read_cache(index, key, npy, meta)
    except CacheError as error:
        log.warning("%s Rebuilding it.", error)
        return None


def load_or_build(index: PatchIndex, cache_dir: str | Path, workers: int | None = None) -> PatchCache:
    """Return the cache for `index`, building it first if no valid one exists.

    A broken cache (e.g. an .npy cut short by a crash or a copy) is rebuilt automatically under the lock,
    with a warning naming it; a CacheError naming the file is raised only if the rebuilt one is broken too.
    """
    cache_dir = Path(cache_dir).expanduser().resolve()
    cache_dir.mkdir(parents=True, exist_ok=True)
    key = cache_key(index)
    npy, meta = cache_dir / f"{key}.npy", cache_dir / f"{key}.json"
    if meta.exists():
        with suppress(CacheError):  # checked again, and reported, under the lock
            return read_cache(index, key, npy, meta)
    with file_lock(cache_dir / f"{key}.lock"):
        cache = find_cache(index, key, npy, meta)  # another job may have built it while we waited
        if cache is None:
            build(index, npy, meta, key, workers or os.cpu_count() or 1)
            cache = read_cache(index, key, npy, meta)
    return cache


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
