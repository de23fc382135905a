"""A synthetic IDC-like dataset written in the exact Kaggle layout.

Each patient gets a synthetic H&E "slide": a tissue mask over a white background, pink eosin stroma
with fibres and fat holes, purple haematoxylin nuclei (sparse elongated fibroblasts, round nuclei
lining normal ducts, dense small dark lymphocyte clusters) and IDC regions with dense, larger, darker,
irregular, pleomorphic nuclei. Colours follow Beer-Lambert optical densities with the Ruifrok H&E stain
vectors, shifted per patient. The slide is cut on a 50 px grid; a patch is positive when at least half
of it is IDC, with some label noise at region borders; the right and bottom edges of some slides leave
patches smaller than 50x50, as in the real download.
"""

from __future__ import annotations

import json
import os
import shutil
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from idclab.data.layout import patch_file_name
from idclab.fileutil import file_lock, stable_hash

PATCH = 50
HAEMATOXYLIN = np.array([0.65, 0.70, 0.29])
EOSIN = np.array([0.07, 0.99, 0.11])
MANIFEST = "synthetic.json"
GENERATOR_VERSION = 3  # bump when the rendering changes, so stale generated sets are not reused


@dataclass(frozen=True)
class SyntheticSpec:
    """Size and difficulty of the synthetic dataset; the same spec and seed give the same files."""

    n_patients: int = 20
    min_grid: int = 10
    max_grid: int = 15
    tumour_burden: float = 0.30
    label_noise: float = 0.15
    edge_fraction: float = 0.15
    seed: int = 0


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int], sigma: float) -> np.ndarray:
    """Gaussian-blurred white noise scaled to zero mean, unit standard deviation."""
    from scipy import ndimage  # here: reading SyntheticSpec (config checks) stays light

    field = ndimage.gaussian_filter(rng.standard_normal(shape), sigma, mode="wrap")
    return (field - field.mean()) / (field.std() + 1e-8)


def _blobs(rng: np.random.Generator, shape: tuple[int, int], n: int, radius: tuple[float, float],
           inside: np.ndarray) -> np.ndarray:
    """A mask of `n` irregular blobs centred on pixels where `inside` is true."""
    h, w = shape
    mask = np.zeros(shape, dtype=bool)
    candidates = np.flatnonzero(inside)
    if n == 0 or candidates.size == 0:
        return mask
    yy, xx = np.mgrid[0:h, 0:w]
    wobble = _smooth_noise(rng, shape, 12)
    for centre in rng.choice(candidates, size=n):
        cy, cx = divmod(int(centre), w)
        r = rng.uniform(*radius)
        stretch = rng.uniform(0.6, 1.4)
        dist = np.sqrt(((yy - cy) * stretch) ** 2 + ((xx - cx) / stretch) ** 2)
        mask |= dist + 0.25 * r * wobble < r
    return mask


def _stamp_nuclei(rng: np.random.Generator, hema: np.ndarray, where: np.ndarray, density: float,
                  radius: tuple[float, float], elongation: tuple[float, float], darkness: tuple[float, float],
                  texture: float = 0.0) -> None:
    """Add elliptical nuclei, about `density` per pixel of `where`, into the haematoxylin map."""
    h, w = hema.shape
    candidates = np.flatnonzero(where)
    n = rng.poisson(density * candidates.size)
    if n == 0 or candidates.size == 0:
        return
    for centre in rng.choice(candidates, size=n):
        cy, cx = divmod(int(centre), w)
        r = rng.uniform(*radius)
        a, b = r * rng.uniform(*elongation), r
        half = int(np.ceil(a)) + 1
        y0, y1, x0, x1 = max(cy - half, 0), min(cy + half + 1, h), max(cx - half, 0), min(cx + half + 1, w)
        yy, xx = np.mgrid[y0:y1, x0:x1]
        theta = rng.uniform(0, np.pi)
        u = (xx - cx) * np.cos(theta) + (yy - cy) * np.sin(theta)
        v = -(xx - cx) * np.sin(theta) + (yy - cy) * np.cos(theta)
        inside = (u / a) ** 2 + (v / b) ** 2 <= 1 + texture * rng.standard_normal(u.shape)
        dark = rng.uniform(*darkness)
        hema[y0:y1, x0:x1] = np.maximum(hema[y0:y1, x0:x1], inside * dark)


def _render_slide(rng: np.random.Generator, spec: SyntheticSpec) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One patient's slide: (RGB uint8 image, tissue mask, IDC mask)."""
    from scipy import ndimage

    rows, cols = rng.integers(spec.min_grid, spec.max_grid + 1, size=2)
    h, w = rows * PATCH, cols * PATCH
    if rng.random() < spec.edge_fraction:  # a slide whose size is not a multiple of 50
        h += int(rng.integers(1, PATCH))
        w += int(rng.integers(1, PATCH))
    shape = (h, w)
    tissue = _smooth_noise(rng, shape, 40) > rng.uniform(-1.2, -0.4)
    fat = _blobs(rng, shape, int(rng.integers(3, 12)), (6, 18), tissue) & tissue

    burden = rng.beta(1.2, 1.2 * (1 - spec.tumour_burden) / spec.tumour_burden)
    n_tumours = int(round(burden * 30))
    tumour = _blobs(rng, shape, n_tumours, (45, 120), tissue) & tissue
    lymph = _blobs(rng, shape, int(rng.integers(2, 7)), (20, 50), tissue & ~tumour) & tissue
    ducts = _blobs(rng, shape, int(rng.integers(2, 8)), (8, 20), tissue & ~tumour & ~lymph) & tissue
    duct_wall = ducts & ~ndimage.binary_erosion(ducts, iterations=3)
    stroma = tissue & ~tumour & ~lymph & ~fat & ~ducts

    fibres = ndimage.gaussian_filter(rng.standard_normal(shape), (1.0, 5.0))
    fibres = np.rot90(fibres) if rng.random() < 0.5 and h == w else fibres
    eosin = np.where(tissue, 0.55 + 0.9 * fibres, 0.04)
    eosin = np.where(fat | ducts & ~duct_wall, 0.05, eosin)
    eosin = np.where(tumour, 0.50 + 0.25 * _smooth_noise(rng, shape, 2), eosin)
    hema = np.where(tumour, 0.10, np.where(tissue & ~fat, 0.06, 0.0))

    grade = rng.uniform(0, 1)  # per patient: low-grade IDC looks closer to normal tissue
    _stamp_nuclei(rng, hema, stroma, 0.0025, (1.2, 2.0), (1.8, 3.0), (0.5, 0.9))
    _stamp_nuclei(rng, hema, duct_wall, 0.05, (1.6, 2.4), (1.0, 1.3), (0.6, 0.9))
    _stamp_nuclei(rng, hema, lymph, 0.03, (1.6, 2.3), (1.0, 1.15), (0.95, 1.3))
    _stamp_nuclei(rng, hema, tumour, 0.004 + 0.005 * grade, (2.2 + 0.6 * grade, 3.0 + 1.4 * grade),
                  (1.0, 1.8), (0.6, 1.25), texture=0.35)

    stain_h = HAEMATOXYLIN * rng.uniform(0.8, 1.2, 3)
    stain_e = EOSIN * rng.uniform(0.75, 1.25, 3)
    strength = rng.uniform(0.7, 1.35)
    od = strength * (hema[..., None] * stain_h + np.clip(eosin, 0, None)[..., None] * stain_e)
    rgb = 255 * np.exp(-ndimage.gaussian_filter(od, (0.7, 0.7, 0)))
    rgb += rng.normal(0, 4, rgb.shape) + rng.uniform(-8, 8, 3)
    return np.clip(rgb, 0, 255).astype(np.uint8), tissue, tumour


def _write_patient(args: tuple[str, np.random.SeedSequence, SyntheticSpec, Path]) -> tuple[int, int]:
    """Render one patient's slide and write its tissue patches; returns (negatives, positives)."""
    patient, seed, spec, root = args
    rng = np.random.default_rng(seed)
    rgb, tissue, tumour = _render_slide(rng, spec)
    counts = [0, 0]
    for label in (0, 1):
        (root / patient / str(label)).mkdir(parents=True, exist_ok=True)
    h, w = tissue.shape
    for y in range(0, h, PATCH):
        for x in range(0, w, PATCH):
            window = (slice(y, y + PATCH), slice(x, x + PATCH))
            if tissue[window].mean() < 0.25:
                continue
            coverage = tumour[window].mean()
            label = int(coverage >= 0.5)
            if 0.15 < coverage < 0.85 and rng.random() < spec.label_noise:
                label = 1 - label
            name = patch_file_name(patient, x + 1, y + 1, label)  # Kaggle coordinates start at 1
            Image.fromarray(rgb[window]).save(root / patient / str(label) / name, compress_level=1)
            counts[label] += 1
    return counts[0], counts[1]


def generate(root: str | Path, spec: SyntheticSpec, workers: int | None = None) -> Path:
    """Write the dataset for `spec` under `root/<spec hash>` unless it is already there; return that folder.

    Writing goes to a temporary folder renamed at the end, under a lock, so a killed or concurrent
    generation never leaves a half-written dataset behind.
    """
    root = Path(root).expanduser().resolve()
    target = root / f"synthetic-{stable_hash({**asdict(spec), 'version': GENERATOR_VERSION})}"
    if (target / MANIFEST).exists():
        return target
    with file_lock(root / ".synthetic.lock"):
        if (target / MANIFEST).exists():
            return target
        staging = target.with_name(target.name + ".partial")
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        seeds = np.random.SeedSequence(spec.seed).spawn(spec.n_patients)
        jobs = [(str(80001 + i), seeds[i], spec, staging) for i in range(spec.n_patients)]
        workers = workers or min(os.cpu_count() or 1, spec.n_patients)
        if workers > 1:
            with ProcessPoolExecutor(workers) as pool:
                counts = list(pool.map(_write_patient, jobs))
        else:
            counts = [_write_patient(job) for job in jobs]
        negatives, positives = (sum(c[i] for c in counts) for i in (0, 1))
        manifest = {"spec": asdict(spec), "version": GENERATOR_VERSION, "negatives": negatives, "positives": positives}
        (staging / MANIFEST).write_text(json.dumps(manifest, indent=2))
        staging.rename(target)
    return target
