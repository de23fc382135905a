"""Neighbourhood input: each patch served with coarse views of the slide around it, as more channels.

A 50x50 patch shows a few cells; whether they are invasive often shows in the tissue around them. With
`data.neighbourhood=r` (rings of patches, 1 to `MAX_RINGS`: 3x3 to 7x7), a patch comes with the (2r+1) x (2r+1)
patches centred on it on its slide (same patient, from the x/y in the Kaggle file names), tiled and averaged down
to 50x50 (block means of 2r+1 pixels a side): channels 4-6 of a 6-channel patch. A list of ring counts (e.g.
`[1, 2]`) gives one such view each, smallest first: the 3x3 view at a third of the resolution, then the 5x5 at a
fifth (9 channels). A neighbour that is not in the data (or did not decode) is filled with the patch itself, so a
patch without known neighbours sees a coarse view of itself. Flips and rotations move all views together (all are
centred on the patch); the model normalises each view's colours alike.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from idclab.data.decode import PATCH_SIZE
from idclab.scoring.context import PATCH_STEP

MAX_RINGS = 3
CHANNELS = 3  # per view
Views = tuple[int, ...]  # the ring counts of a patch's neighbourhood views, smallest first; () for none


def input_channels(views: Views) -> int:
    """Channels of a model's input: the patch's 3, plus 3 per neighbourhood view."""
    return CHANNELS * (1 + len(views))


def check_rings(rings: object) -> Views:
    """`data.neighbourhood` as the ring counts of its views: an int from 0 (none) to `MAX_RINGS` gives one view (or
    none), a list of distinct ints from 1 to `MAX_RINGS` one view each, smallest first (ValueError naming the
    setting otherwise); an empty list means none, as 0 does."""
    def is_count(value: object, low: int) -> bool:
        return isinstance(value, int) and not isinstance(value, bool) and low <= value <= MAX_RINGS

    if is_count(rings, 0):
        return (rings,) if rings else ()
    if (isinstance(rings, Sequence) and not isinstance(rings, str) and all(is_count(r, 1) for r in rings)
            and len(set(rings)) == len(rings)):
        return tuple(sorted(rings))
    raise ValueError(f"data.neighbourhood must be an integer from 0 to {MAX_RINGS} (rings of patches) or a list of "
                     f"distinct integers from 1 to {MAX_RINGS} (one view each), got {rings!r}")


def views_of(config: Mapping[str, Any]) -> Views:
    """The neighbourhood views a run config (a plain dict) gives its model's input: `data.neighbourhood`, none when
    absent (configs saved before the option existed); ValueError for a `data` that is not a mapping."""
    data = config.get("data") or {}
    if not isinstance(data, Mapping):
        raise ValueError(f"data must be a mapping, got {data!r}")
    return check_rings(data.get("neighbourhood", 0))


def tile_side(rings: int) -> int:
    """Patches a side of the square of `rings` rings around a patch: 2r + 1 (ValueError for anything but one ring
    count from 0 to `MAX_RINGS`)."""
    if isinstance(rings, Sequence):
        raise ValueError(f"one ring count is needed here, got {rings!r}")
    return 2 * max(check_rings(rings), default=0) + 1


def neighbour_rows(patients: np.ndarray, xs: np.ndarray, ys: np.ndarray, rings: int,
                   usable: np.ndarray | None = None) -> np.ndarray:
    """An N x (2r+1)^2 int64 array: entry [i, k] is the row of the patch of i's patient at offset k (row-major
    over dy, then dx, each from -r to r patch steps), or -1 when there is none (or it is not `usable`); the
    centre entry is i itself. A position listed twice resolves to its first usable row."""
    side = tile_side(rings)
    n = len(patients)
    _, codes = np.unique(np.asarray(patients).astype(str), return_inverse=True)
    xs, ys = np.asarray(xs, dtype=np.int64), np.asarray(ys, dtype=np.int64)
    candidates = np.arange(n) if usable is None else np.flatnonzero(usable)
    import pandas as pd  # here: views_of and in_chunks (prediction) stay light

    keys = pd.MultiIndex.from_arrays([codes[candidates], xs[candidates], ys[candidates]])
    first = ~keys.duplicated()
    keys, candidates = keys[first], candidates[first]
    cells = np.full((n, side * side), -1, dtype=np.int64)
    cells[:, side * side // 2] = np.arange(n)
    if not len(candidates):  # nothing decoded: every patch alone
        return cells
    offsets = range(-rings, rings + 1)
    for k, (dy, dx) in enumerate((dy, dx) for dy in offsets for dx in offsets):
        if dy == dx == 0:
            continue
        found = keys.get_indexer(pd.MultiIndex.from_arrays([codes, xs + dx * PATCH_STEP, ys + dy * PATCH_STEP]))
        cells[:, k] = np.where(found >= 0, candidates[np.maximum(found, 0)], -1)
    return cells


def alone(count: int, rings: int) -> np.ndarray:
    """The cells of `count` patches with no known neighbours (each sees itself only)."""
    side = tile_side(rings)
    cells = np.full((count, side * side), -1, dtype=np.int64)
    cells[:, side * side // 2] = np.arange(count)
    return cells


def coarse_views(images: np.ndarray, cells: np.ndarray, size: int = 1024) -> np.ndarray:
    """The neighbourhood view alone (N x 50 x 50 x 3 uint8) of every row of `cells` (see `assemble`), built in
    chunks of `size` rows with a progress bar: once per dataset, instead of (2r+1)^2 reads per patch per epoch."""
    views = np.empty((len(cells), PATCH_SIZE, PATCH_SIZE, CHANNELS), dtype=np.uint8)
    side = int(round(cells.shape[1] ** 0.5)) if len(cells) else 1
    from tqdm.auto import tqdm

    with tqdm(total=len(cells), desc=f"Building {side}x{side} neighbourhood views", unit="img", disable=None) as bar:
        for start in range(0, len(cells), size):
            chunk = cells[start:start + size]
            views[start:start + len(chunk)] = assemble(images, chunk)[..., CHANNELS:]
            bar.update(len(chunk))
    return views


def assemble(images: np.ndarray, cells: np.ndarray, views: Views | None = None) -> np.ndarray:
    """B x 50 x 50 x 3(1 + V) uint8 patches from the rows `cells` (B x (2r+1)^2, see `neighbour_rows`) of `images`
    (N x 50 x 50 x 3 uint8, e.g. the memory-mapped cache): the centre patch, then its neighbourhood of each ring
    count in `views` (default: the cells' own r) tiled and averaged down to 50x50 (rounded), missing neighbours (-1)
    filled with the centre patch."""
    count, tiles = cells.shape
    side = int(round(tiles ** 0.5))
    if side * side != tiles or side % 2 == 0:
        raise ValueError(f"cells must hold an odd square number of rows per patch, got {tiles}")
    views = views or (side // 2,)
    if 2 * max(views) + 1 > side:
        raise ValueError(f"cells of {side}x{side} patches cannot give a view of {max(views)} rings")
    filled = np.where(cells >= 0, cells, cells[:, tiles // 2:tiles // 2 + 1])
    unique, inverse = np.unique(filled, return_inverse=True)  # each row read once, in order (memory map)
    pixels = np.asarray(images[unique])[inverse.reshape(-1)]
    mosaic = pixels.reshape(count, side, side, PATCH_SIZE, PATCH_SIZE, CHANNELS)
    mosaic = mosaic.transpose(0, 1, 3, 2, 4, 5)  # B, cy, py, cx, px, C: tiles side by side
    mosaic = mosaic.reshape(count, side * PATCH_SIZE, side * PATCH_SIZE, CHANNELS)
    centre = pixels.reshape(count, tiles, PATCH_SIZE, PATCH_SIZE, CHANNELS)[:, tiles // 2]
    coarse = []
    for rings in views:  # the inner (2r+1)^2 tiles of the mosaic, averaged down
        inner = slice((side // 2 - rings) * PATCH_SIZE, (side // 2 + rings + 1) * PATCH_SIZE)
        coarse.append(mosaic_blocks(np.ascontiguousarray(mosaic[:, inner, inner]), 2 * rings + 1))
    return np.concatenate([centre, *coarse], axis=-1)


def mosaic_blocks(mosaic: np.ndarray, factor: int) -> np.ndarray:
    """B x H x W x C uint8 averaged over `factor` x `factor` pixel blocks (rounded), B x H/f x W/f x C. Sums of
    strided slices (rows, then columns): about 9x faster than numpy's sum over the block axes."""
    count, height, width, channels = mosaic.shape
    rows = mosaic.reshape(count, height // factor, factor, width, channels)
    sums = rows[:, :, 0].astype(np.uint16)
    for i in range(1, factor):
        sums += rows[:, :, i]
    columns = sums.reshape(count, height // factor, width // factor, factor, channels)
    blocks = columns[:, :, :, 0].copy()
    for i in range(1, factor):
        blocks += columns[:, :, :, i]
    return ((blocks + factor * factor // 2) // (factor * factor)).astype(np.uint8)


def in_chunks(images: np.ndarray, views: Views, positions: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
              size: int = 1024) -> Iterator[np.ndarray]:
    """A stack of 3-channel patches (N x 50 x 50 x 3) in chunks of `size`, with their neighbourhood `views` (3
    channels each) when there are any: neighbours found among them by `positions` (patient, x, y) when given, else
    each patch alone. Chunks bound the memory (each view reads (2r+1)^2 patches)."""
    if views:
        widest = max(views)
        cells = neighbour_rows(*positions, widest) if positions is not None else alone(len(images), widest)
    for start in range(0, len(images), size):
        yield assemble(images, cells[start:start + size], views) if views else images[start:start + size]
