import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score, balanced_accuracy_score, f1_score, roc_auc_score

from idclab.models.losses import bce, focal, weighted_bce
from idclab.scoring.metrics import (
    BinaryMetrics,
    RankedPatches,
    binary_metrics,
    interval_lines,
    patient_bootstrap,
    report,
)

LOGITS = torch.tensor([2.0, -1.0, 0.5, -3.0, 1.0])
TARGETS = torch.tensor([1.0, 0.0, 0.0, 0.0, 1.0])


def test_weighted_bce_derives_pos_weight_from_counts():
    loss = weighted_bce([300, 100])
    assert loss.pos_weight.item() == pytest.approx(3.0)
    assert weighted_bce([300, 100], pos_weight=1.5).pos_weight.item() == 1.5
    # weighting positives raises the loss of a missed positive
    assert loss(torch.tensor([-2.0]), torch.tensor([1.0])) > bce([300, 100])(torch.tensor([-2.0]), torch.tensor([1.0]))
    with pytest.raises(ValueError, match="no positive"):
        weighted_bce([10, 0])


def test_focal_matches_definition_and_validates():
    loss = focal([1, 1], alpha=0.75, gamma=2.0)(LOGITS, TARGETS)
    p = torch.sigmoid(LOGITS)
    p_t = p * TARGETS + (1 - p) * (1 - TARGETS)
    alpha_t = 0.75 * TARGETS + 0.25 * (1 - TARGETS)
    expected = (-alpha_t * (1 - p_t) ** 2 * torch.log(p_t)).mean()
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    assert focal([1, 1], alpha=0.75, gamma=0.0)(LOGITS, TARGETS) > loss  # focusing shrinks easy losses
    with pytest.raises(ValueError, match="alpha"):
        focal([1, 1], alpha=1.5)
    with pytest.raises(ValueError, match="gamma"):
        focal([1, 1], gamma=-1)


def test_metrics_agree_with_sklearn():
    rng = np.random.default_rng(0)
    targets = (rng.random(500) < 0.3).astype(int)
    probs = np.clip(targets * 0.3 + rng.random(500) * 0.7, 0, 1)
    metrics = BinaryMetrics()
    for chunk in np.array_split(np.arange(500), 4):
        metrics.update(torch.tensor(probs[chunk], dtype=torch.float32), torch.tensor(targets[chunk]),
                       torch.from_numpy(chunk))
    values = metrics.compute()
    preds = (probs >= 0.5).astype(int)
    assert values["f1"] == pytest.approx(f1_score(targets, preds), abs=1e-5)
    assert values["macro_f1"] == pytest.approx(f1_score(targets, preds, average="macro"), abs=1e-5)
    assert values["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(targets, preds), abs=1e-5)
    assert values["auroc"] == pytest.approx(roc_auc_score(targets, probs), abs=1e-4)
    assert values["auprc"] == pytest.approx(average_precision_score(targets, probs), abs=1e-4)
    assert values["tp"] + values["fn"] == targets.sum()
    metrics.reset()
    metrics.update(torch.tensor([0.9]), torch.tensor([1]), torch.tensor([0]))
    assert metrics.compute()["tp"] == 1


def test_evaluation_metrics_count_each_patch_once_in_row_order():
    probs = torch.tensor([0.9, 0.2, 0.7, 0.4, 0.6])
    targets = torch.tensor([1, 0, 1, 0, 0])
    rows = torch.tensor([10, 11, 12, 13, 14])
    metrics = BinaryMetrics(unique_rows=True)
    # two processes' shares of 5 patches, interleaved, padded by repeating the first (as DistributedSampler does)
    for share in ([0, 2, 4], [1, 3, 0]):
        metrics.update(probs[share], targets[share], rows[share], logits=torch.logit(probs[share]))
    epoch = metrics.gathered()
    assert epoch.rows.tolist() == rows.tolist() and epoch.targets.tolist() == targets.tolist()
    assert torch.equal(epoch.probs, probs) and torch.allclose(epoch.logits, torch.logit(probs))
    once = BinaryMetrics()
    once.update(probs, targets, rows)
    assert metrics.compute() == once.compute()
    training = BinaryMetrics()  # training keeps every draw: a re-sampler repeats patches on purpose
    training.update(probs[[0, 0]], targets[[0, 0]], rows[[0, 0]])
    assert training.gathered().rows.tolist() == [10, 10] and training.gathered().logits is None


def test_report_has_precision_recall_f1_support_per_class():
    text, as_dict = report(np.array([0, 0, 1, 1]), np.array([0.1, 0.7, 0.8, 0.2]))
    assert "IDC (1)" in text and "support" in text
    assert as_dict["IDC (1)"]["support"] == 2
    assert as_dict["non-IDC (0)"]["precision"] == 0.5
    assert set(as_dict["IDC (1)"]) == {"precision", "recall", "f1-score", "support"}


def test_interval_lines_show_value_and_interval_per_metric():
    text = interval_lines({"test_f1": 0.5, "test_auroc": 0.875}, {"f1": (0.25, 0.75), "auroc": (0.8, 0.9)}, "test_")
    assert text.splitlines() == [f"  {'f1':<18} 0.5000  [0.2500, 0.7500]", f"  {'auroc':<18} 0.8750  [0.8000, 0.9000]"]


def test_a_patch_exactly_at_the_threshold_is_labelled_idc_as_everywhere_else():
    # thresholds tuned on validation are probabilities of patches; labels are P >= threshold (as in predict)
    values = binary_metrics(torch.tensor([0.9, 0.1, 0.9, 0.8]), torch.tensor([1, 1, 1, 0]), threshold=0.9)
    assert (values["tp"], values["fn"], values["fp"], values["tn"]) == (2, 1, 0, 1)
    assert values["f1"] == pytest.approx(0.8) and values["recall"] == pytest.approx(2 / 3)


def test_ranked_patches_give_the_weighted_auroc_of_any_weighting_with_ties_counting_half():
    ranked = RankedPatches(np.array([0, 1, 0, 1, 1]), np.array([0.1, 0.4, 0.4, 0.8, 0.2]))
    # positive-negative pairs weighted by the product of weights: 0.4>0.1 (2), 0.4=0.4 (half of 2), 0.8 beats both
    # (1 + 1), 0.2>0.1 (3), 0.2<0.4 (0): 8 of 6 x 2
    assert ranked.auroc(np.array([1, 2, 1, 1, 3])) == pytest.approx(8 / 12)
    assert ranked.auroc(np.ones(5)) == pytest.approx(roc_auc_score([0, 1, 0, 1, 1], [0.1, 0.4, 0.4, 0.8, 0.2]))
    assert np.isnan(ranked.auroc(np.array([0, 1, 0, 1, 1])))  # no negative weighted in: undefined
    rng = np.random.default_rng(0)
    targets, probs = rng.integers(0, 2, 500), rng.integers(0, 40, 500) / 40  # many ties
    weights = rng.integers(0, 4, 500).astype(float)
    assert RankedPatches(targets, probs).auroc(weights) == pytest.approx(
        roc_auc_score(targets, probs, sample_weight=weights), abs=1e-12)


def test_ranked_patches_refuse_a_missing_probability():
    with pytest.raises(ValueError, match="P\\(IDC\\) is NaN for 1 patch"):
        RankedPatches(np.array([0, 1]), np.array([0.2, np.nan]))


def test_a_bootstrap_draw_without_both_classes_counts_for_no_metric():
    # a: one negative at 0.2, b: one positive at 0.8, both right. A draw of a alone (or b alone) has no F1,
    # balanced accuracy or AUROC worth the name: every draw that counts is perfect.
    intervals = patient_bootstrap(np.array([0, 1]), np.array([0.2, 0.8]), np.array(["a", "b"]), 0.5, resamples=200)
    assert intervals == {"f1": (1.0, 1.0), "balanced_accuracy": (1.0, 1.0), "auroc": (1.0, 1.0)}
