import numpy as np
import pytest
import torch

from idclab.data.augment import RandomDihedral, basic, no_augmentation, stain


@pytest.fixture
def patch():
    rng = np.random.default_rng(0)
    image = np.full((50, 50, 3), 230, np.uint8)
    image[10:30, 5:20] = rng.integers(60, 160, (20, 15, 3))
    return image


def dihedral_images(image: np.ndarray) -> list[np.ndarray]:
    turns = [np.rot90(image, k) for k in range(4)]
    return turns + [np.fliplr(t) for t in turns]


def test_none_does_nothing():
    augmentation = no_augmentation()
    assert augmentation.per_sample is None and augmentation.per_batch is None


def test_albumentations_basic_gives_flips_and_rotations(patch):
    pipeline = basic(batched=False).per_sample
    outputs = [pipeline(image=patch)["image"] for _ in range(40)]
    allowed = dihedral_images(patch)
    for out in outputs:
        assert out.dtype == np.uint8 and any(np.array_equal(out, a) for a in allowed)
    assert len({out.tobytes() for out in outputs}) > 3


def test_batched_dihedral_gives_each_patch_its_own_flip_or_rotation(patch):
    torch.manual_seed(0)
    batch = torch.from_numpy(np.stack([patch] * 64)).permute(0, 3, 1, 2).contiguous()
    out = RandomDihedral(0.5)(batch.clone())
    allowed = [torch.from_numpy(a.copy()).permute(2, 0, 1) for a in dihedral_images(patch)]
    seen = set()
    for item in out:
        matches = [i for i, a in enumerate(allowed) if torch.equal(item, a)]
        assert matches, "not a flip/rotation of the input"
        seen.add(matches[0])
    assert len(seen) == 8  # all eight symmetries occur in a batch of 64
    assert basic(batched=True).per_sample is None


@pytest.mark.parametrize("batched", [True, False])
def test_stain_changes_colours(patch, batched):
    augmentation = stain(p_stain=1.0, batched=batched)
    outputs = [augmentation.per_sample(image=patch)["image"] for _ in range(10)]
    assert all(o.shape == patch.shape and o.dtype == np.uint8 for o in outputs)
    assert any(abs(float(o.mean()) - float(patch.mean())) > 1 for o in outputs)
    assert (augmentation.per_batch is not None) == batched


@pytest.mark.parametrize("batched", [True, False])
def test_p_flip_zero_leaves_rotations_only(patch, batched):
    """augment.p_flip: 0 never mirrors a patch (the four rotations only); 1 always does."""
    torch.manual_seed(0)
    turns = [np.rot90(patch, k) for k in range(4)]
    for p_flip, allowed in ((0.0, turns), (1.0, [np.rot90(np.flipud(np.fliplr(patch)), k) for k in range(4)])):
        augmentation = basic(p_flip=p_flip, batched=batched)
        if batched:
            batch = torch.from_numpy(np.stack([patch] * 32)).permute(0, 3, 1, 2).contiguous()
            outputs = [o.permute(1, 2, 0).numpy() for o in augmentation.per_batch(batch)]
        else:
            outputs = [augmentation.per_sample(image=patch)["image"] for _ in range(32)]
        assert all(any(np.array_equal(o, a) for a in allowed) for o in outputs), p_flip


def test_p_stain_zero_leaves_the_colours(patch):
    """augment.p_stain is the chance of the stain and colour jitter: 0 leaves every patch's colours as they were."""
    still = stain(p_stain=0.0, brightness=0.5, batched=True)
    assert all(np.array_equal(still.per_sample(image=patch)["image"], patch) for _ in range(10))
    jittered = stain(p_stain=1.0, batched=True)
    assert not any(np.array_equal(jittered.per_sample(image=patch)["image"], patch) for _ in range(10))
