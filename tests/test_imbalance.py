"""The imbalance methodology: class-balanced loss, thresholds, imbalance metrics, TTA, double correction."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import balanced_accuracy_score, f1_score, matthews_corrcoef

from idclab.config.validation import double_correction
from idclab.models.losses import class_balanced
from idclab.scoring.metrics import imbalance_metrics, patient_bootstrap
from idclab.scoring.thresholds import tune_threshold

RNG = np.random.default_rng(0)
TARGETS = (RNG.random(2000) < 0.3).astype(int)
PROBS = np.clip(0.35 * TARGETS + 0.65 * RNG.random(2000), 0, 1)


def test_class_balanced_weights_follow_the_effective_number():
    loss = class_balanced([900, 100], beta=0.99)
    effective = np.array([(1 - 0.99**900) / 0.01, (1 - 0.99**100) / 0.01])
    expected = (1 / effective) / (1 / effective).sum() * 2
    assert loss.weights.tolist() == pytest.approx(expected.tolist(), rel=1e-5)
    assert loss.weights[1] > loss.weights[0]  # the minority class weighs more
    logits, targets = torch.tensor([0.3, -1.2, 2.0]), torch.tensor([1.0, 0.0, 1.0])
    bce = torch.nn.functional.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    weights = torch.where(targets == 1, loss.weights[1], loss.weights[0])
    assert loss(logits, targets).item() == pytest.approx((weights * bce).mean().item(), rel=1e-5)
    focal = class_balanced([900, 100], beta=0.99, base="focal", gamma=2.0)
    assert focal(logits, targets) < loss(logits, targets)  # focusing shrinks easy examples
    assert class_balanced([900, 100], beta=0.0).weights.tolist() == [1.0, 1.0]  # beta=0: no re-weighting


@pytest.mark.parametrize("kwargs", [{"beta": 1.0}, {"base": "hinge"}])
def test_class_balanced_validates(kwargs):
    with pytest.raises(ValueError):
        class_balanced([10, 5], **kwargs)


def test_thresholds_meet_their_definitions():
    assert tune_threshold(TARGETS, PROBS, "fixed", value=0.4) == 0.4
    best_f1 = tune_threshold(TARGETS, PROBS, "max_f1")
    grid = np.linspace(0.05, 0.95, 181)
    assert f1_score(TARGETS, best_f1 <= PROBS) >= max(f1_score(TARGETS, t <= PROBS) for t in grid) - 1e-9
    youden = tune_threshold(TARGETS, PROBS, "youden")
    best_j = max(balanced_accuracy_score(TARGETS, t <= PROBS) for t in grid)
    assert balanced_accuracy_score(TARGETS, youden <= PROBS) >= best_j - 1e-9
    sens = tune_threshold(TARGETS, PROBS, "sensitivity", target_sensitivity=0.9)
    assert (PROBS[TARGETS == 1] >= sens).mean() >= 0.9
    assert (PROBS[TARGETS == 1] >= sens + 1e-3).mean() < 0.9  # the highest such threshold
    for method in ("max_f1", "youden", "sensitivity"):  # one class only: nothing to tune, threshold.value is used
        assert tune_threshold(np.zeros(5, int), np.random.rand(5), method, value=0.3) == 0.3
    with pytest.raises(ValueError, match="threshold.name"):
        tune_threshold(TARGETS, PROBS, "magic")


def test_sensitivity_threshold_is_the_highest_reaching_the_target():
    # positives at 0.9, 0.8, 0.7, 0.5 and negatives at 0.6, 0.2: sensitivity 1/4 needs P >= 0.9, 2/4 needs
    # P >= 0.8, 3/4 needs 0.7, 4/4 needs 0.5 (roc_curve's dropped intermediate points gave 0.7 for 1/4 and 2/4)
    targets = np.array([1, 1, 1, 0, 1, 0])
    probs = np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.2])
    expected = {0.25: 0.9, 0.5: 0.8, 0.6: 0.7, 0.75: 0.7, 1.0: 0.5}
    for target, threshold in expected.items():
        assert tune_threshold(targets, probs, "sensitivity", target_sensitivity=target) == threshold, target
    for target in (1.5, 0.0):
        with pytest.raises(ValueError, match="target_sensitivity"):
            tune_threshold(targets, probs, "sensitivity", target_sensitivity=target)


def test_imbalance_metrics_and_mcc():
    text, values = imbalance_metrics(TARGETS, PROBS, 0.5)
    preds = (PROBS >= 0.5).astype(int)
    sensitivity = preds[TARGETS == 1].mean()
    specificity = 1 - preds[TARGETS == 0].mean()
    assert values["sensitivity"] == pytest.approx(sensitivity)
    assert values["specificity"] == pytest.approx(specificity)
    assert values["gmean"] == pytest.approx(np.sqrt(sensitivity * specificity))
    assert values["mcc"] == pytest.approx(matthews_corrcoef(TARGETS, preds))
    assert "iba" in text and "geo" in text


@pytest.mark.slow
def test_patient_bootstrap_resamples_patients_not_patches():
    rng = np.random.default_rng(1)
    patients = np.repeat(np.arange(20), 100)  # patients differ in IDC share and stain, as slides do
    targets = (rng.random(2000) < rng.uniform(0.02, 0.9, 20)[patients]).astype(int)
    probs = np.clip(0.35 * targets + 0.65 * rng.random(2000) + rng.normal(0, 0.15, 20)[patients], 0, 1)
    by_patient = patient_bootstrap(targets, probs, patients, 0.5, resamples=300)
    by_patch = patient_bootstrap(targets, probs, np.arange(2000), 0.5, resamples=300)
    f1 = f1_score(targets, probs >= 0.5)
    assert by_patient["f1"][0] < f1 < by_patient["f1"][1]
    width = {name: ci["f1"][1] - ci["f1"][0] for name, ci in (("patient", by_patient), ("patch", by_patch))}
    assert width["patient"] > 1.5 * width["patch"]  # patches of one patient are not independent
    assert set(by_patient) == {"f1", "balanced_accuracy", "auroc"}
    assert patient_bootstrap(targets, probs, patients, 0.5, 300, seed=1) != by_patient


def test_double_correction_is_flagged_unless_allowed(make_cfg):
    assert double_correction(make_cfg("sampler=oversample", "loss=weighted")) is not None
    assert double_correction(make_cfg("sampler=weighted", "loss=class_balanced")) is not None
    assert double_correction(make_cfg("sampler=undersample", "loss=focal")) is not None
    assert double_correction(make_cfg("sampler=undersample", "loss=focal", "loss.alpha=0.5")) is None
    assert double_correction(make_cfg("sampler=none", "loss=weighted")) is None
    assert double_correction(make_cfg("sampler=oversample", "loss=bce")) is None
    assert double_correction(make_cfg("sampler=oversample", "loss=weighted", "allow_double_correction=true")) is None


def test_tta_averages_the_eight_symmetries(make_cfg):
    from omegaconf import OmegaConf

    from idclab.config.build import build_classifier

    config = OmegaConf.to_container(make_cfg(), resolve=True)
    classifier = build_classifier(config, [10, 5], [0.5] * 3, [0.2] * 3).eval()
    images = torch.randint(0, 255, (4, 3, 50, 50), dtype=torch.uint8)
    plain = classifier.probabilities(images)
    classifier.tta = True
    averaged = classifier.probabilities(images)
    views = [torch.rot90(v, k, dims=(-2, -1)) for v in (images, images.flip(-1)) for k in range(4)]
    expected = torch.stack([torch.sigmoid(classifier(v)) for v in views]).mean(0)
    assert torch.allclose(averaged, expected) and not torch.allclose(averaged, plain)
    rotated = classifier.probabilities(torch.rot90(images, 1, dims=(-2, -1)))
    assert torch.allclose(rotated, averaged, atol=1e-6)  # invariant to the symmetries it averages over
