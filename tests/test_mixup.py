"""Mixup (`mixup.alpha`): blends of patch pairs and their losses, against hand-computed cases."""

from __future__ import annotations

import math

import pytest
import torch

from idclab.classifier.mixup import MixupBatch, draw_mixup, mixed_loss
from idclab.classifier.module import IDCClassifier


def test_a_mixup_batch_blends_each_input_with_its_partner():
    inputs = torch.tensor([[0.0], [10.0], [20.0]])
    mix = MixupBatch(weight=0.75, order=torch.tensor([1, 2, 0]))
    assert mix.blend(inputs).flatten().tolist() == pytest.approx([2.5, 12.5, 15.0])  # 0.75 x + 0.25 partner


def test_the_mixed_loss_is_the_weighted_loss_of_both_labels():
    logits, targets = torch.tensor([0.0, 2.0]), torch.tensor([1.0, 0.0])
    mix = MixupBatch(weight=0.75, order=torch.tensor([1, 0]))  # partners' targets: 0, 1
    bce = torch.nn.BCEWithLogitsLoss()
    loss_own = (math.log(2) + math.log(1 + math.exp(2))) / 2      # targets 1, 0
    loss_partner = (math.log(2) + math.log(1 + math.exp(-2))) / 2  # targets 0, 1
    assert float(mixed_loss(bce, logits, targets, mix)) == pytest.approx(0.75 * loss_own + 0.25 * loss_partner)


def test_mixing_weights_favour_the_patch_itself_and_alpha_zero_is_off():
    torch.manual_seed(0)
    weights = [draw_mixup(0.4, 8).weight for _ in range(200)]
    assert all(0.5 <= w <= 1 for w in weights) and min(weights) < 0.6  # Beta(0.4, 0.4) folded onto [0.5, 1]
    mix = draw_mixup(0.4, 8)
    assert sorted(mix.order.tolist()) == list(range(8))
    assert draw_mixup(0.0, 8) is None
    with pytest.raises(ValueError, match="mixup.alpha"):
        draw_mixup(-1.0, 8)


def classifier(alpha: float | None) -> IDCClassifier:
    config = {} if alpha is None else {"mixup": {"alpha": alpha}}
    return IDCClassifier(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 50 * 50, 1),
                                             torch.nn.Flatten(0)),
                         torch.nn.BCEWithLogitsLoss(), config=config, mean=[0.5] * 3, std=[0.25] * 3,
                         class_counts=[2, 2])


def test_the_classifier_trains_on_mixed_batches_only_when_asked():
    torch.manual_seed(1)
    images = torch.randint(0, 256, (4, 3, 50, 50), dtype=torch.uint8)
    batch = (images, torch.tensor([0, 1, 0, 1]), torch.arange(4))
    plain, off, mixed = classifier(None), classifier(0.0), classifier(0.4)
    off.load_state_dict(plain.state_dict())
    mixed.load_state_dict(plain.state_dict())
    expected = plain.criterion(plain(images), batch[1].float())
    assert float(plain.training_step(batch, 0)) == pytest.approx(float(expected))
    assert float(off.training_step(batch, 0)) == pytest.approx(float(expected))
    assert float(mixed.training_step(batch, 0)) != pytest.approx(float(expected))
    assert classifier(None).mixup_alpha == 0.0 == IDCClassifier(
        torch.nn.Flatten(), torch.nn.BCEWithLogitsLoss(), config={"mixup": None}, mean=[0.5] * 3, std=[0.25] * 3,
        class_counts=[2, 2]).mixup_alpha  # a config saying `mixup: null` means off
