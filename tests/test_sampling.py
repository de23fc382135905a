import numpy as np
import pytest

from idclab.data.sampling import no_sampler, oversample, undersample, weighted

LABELS = np.array([0] * 70 + [1] * 30)


def test_none_leaves_shuffling_to_the_loader():
    assert no_sampler(LABELS, seed=0) is None


def test_weighted_draws_both_classes_about_equally():
    sampler = weighted(LABELS, seed=0)
    drawn = np.concatenate([LABELS[list(sampler)] for _ in range(20)])
    assert len(list(sampler)) == len(LABELS)
    assert abs(drawn.mean() - 0.5) < 0.05


@pytest.mark.parametrize(("factory", "length"), [(oversample, 140), (undersample, 60)])
def test_imbalanced_learn_samplers_balance_and_redraw_each_epoch(factory, length):
    sampler = factory(LABELS, seed=0)
    epoch0 = list(sampler)
    assert len(epoch0) == len(sampler) == length
    assert LABELS[epoch0].mean() == 0.5
    assert list(sampler) == epoch0  # same epoch, same draw
    sampler.set_epoch(1)
    assert list(sampler) != epoch0
    again = factory(LABELS, seed=0)
    again.set_epoch(1)
    assert list(again) == list(sampler)  # seeded: a resumed run sees the same draws


def test_sampling_strategy_is_passed_through():
    sampler = undersample(LABELS, seed=0, sampling_strategy=0.5)  # minority / majority = 0.5
    assert len(sampler) == 30 + 60
