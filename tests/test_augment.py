import numpy as np
import pytest

from idclab.data.augment import basic, no_augmentation, stain


@pytest.fixture
def patch():
    rng = np.random.default_rng(0)
    image = np.full((50, 50, 3), 230, np.uint8)
    image[10:30, 5:20] = rng.integers(60, 160, (20, 15, 3))
    return image


def test_none_is_none():
    assert no_augmentation() is None


def test_basic_only_moves_pixels(patch):
    outputs = [basic()(image=patch)["image"] for _ in range(20)]
    for out in outputs:
        assert out.shape == patch.shape and out.dtype == np.uint8
        assert sorted(out.reshape(-1, 3).tolist()) == sorted(patch.reshape(-1, 3).tolist())
    assert any(not np.array_equal(out, patch) for out in outputs)


def test_stain_changes_colours(patch):
    pipeline = stain(p_stain=1.0)
    outputs = [pipeline(image=patch)["image"] for _ in range(10)]
    assert all(o.shape == patch.shape and o.dtype == np.uint8 for o in outputs)
    assert any(abs(float(o.mean()) - float(patch.mean())) > 1 for o in outputs)
