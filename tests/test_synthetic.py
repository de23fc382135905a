import hashlib

import numpy as np
import pytest
from PIL import Image

from idclab.data.layout import scan
from idclab.data.synthetic import MANIFEST, SyntheticSpec, generate

SMALL = SyntheticSpec(n_patients=6, min_grid=6, max_grid=7, edge_fraction=1.0, seed=3)


def digest(folder) -> str:
    h = hashlib.sha256()
    for path in sorted(folder.rglob("*.png")):
        h.update(path.name.encode() + path.read_bytes())
    return h.hexdigest()


@pytest.mark.slow
def test_layout_determinism_and_reuse(tmp_path):
    first = generate(tmp_path / "a", SMALL, workers=2)
    second = generate(tmp_path / "b", SMALL, workers=1)
    assert digest(first) == digest(second)  # same spec and seed, any number of workers
    stamp = (first / MANIFEST).stat().st_mtime_ns
    assert generate(tmp_path / "a", SMALL) == first and (first / MANIFEST).stat().st_mtime_ns == stamp
    other = generate(tmp_path / "a", SyntheticSpec(**{**SMALL.__dict__, "seed": 4}))
    assert other != first and digest(other) != digest(first)
    index = scan(first)
    assert not index.skipped  # every file follows the Kaggle naming, in the folder of its class
    assert len(np.unique(index.patients)) == SMALL.n_patients


@pytest.mark.slow
def test_looks_like_the_real_data(tmp_path):
    spec = SyntheticSpec(n_patients=12, seed=1)
    index = scan(generate(tmp_path, spec))
    positive_share = index.labels.mean()
    assert 0.15 < positive_share < 0.40, positive_share
    sizes = [Image.open(index.root / p).size for p in index.paths]
    small = [s for s in sizes if s != (50, 50)]
    assert 0 < len(small) < 0.1 * len(sizes)  # a few border patches, as in the download
    assert all(w <= 50 and h <= 50 for w, h in sizes)
    means = {}
    for label in (0, 1):
        pick = np.flatnonzero(index.labels == label)[:200]
        means[label] = np.mean([np.asarray(Image.open(index.root / index.paths[i])).mean() for i in pick])
    assert means[1] < means[0]  # IDC patches carry more, darker nuclei


def test_patients_differ_in_stain(tmp_path):
    index = scan(generate(tmp_path, SMALL))
    colour = []
    for patient in np.unique(index.patients):
        rows = np.flatnonzero((index.patients == patient) & (index.labels == 0))[:30]
        pixels = np.stack([np.asarray(Image.open(index.root / index.paths[i]).convert("RGB").resize((50, 50)))
                           for i in rows]).reshape(-1, 3)
        colour.append(pixels.mean(axis=0))
    assert np.ptp(np.array(colour), axis=0).max() > 5


@pytest.mark.slow
def test_the_generators_settings_change_the_data(tmp_path):
    """tumour_burden moves the IDC share, edge_fraction makes edge patches smaller than 50x50, label_noise flips
    labels on tumour borders."""
    def made(name: str, **changes):
        return scan(generate(tmp_path / name, SyntheticSpec(**{**SMALL.__dict__, **changes}), workers=1))

    low, high = made("low", tumour_burden=0.1), made("high", tumour_burden=0.6)
    assert low.labels.mean() < high.labels.mean()
    clean, edged = made("clean", edge_fraction=0.0), made("edged", edge_fraction=1.0)
    smaller = [sum(Image.open(index.root / p).size != (50, 50) for p in index.paths) for index in (clean, edged)]
    assert smaller[0] == 0 < smaller[1]
    flipped = made("noisy", edge_fraction=0.0, label_noise=1.0)
    assert sorted(flipped.paths) != sorted(clean.paths) and len(flipped.paths) == len(clean.paths)  # same patches
