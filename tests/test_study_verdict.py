"""A study's verdict: gains per seed, the paired patient bootstrap and the call, on hand-computed predictions."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import average_precision_score

from idclab.scoring.verdict import (
    RankedScores,
    Rule,
    call,
    conclusion,
    paired_bootstrap,
    recompute,
    verdict_markdown,
    verdict_table,
)


def frame(probs: list[float], targets: list[int], patients: list[str]) -> pd.DataFrame:
    """One run's validation predictions, as cv/val_predictions.csv holds them (context-blended `probability` set
    apart from the patches' own `patch_probability`, which the verdict reads)."""
    return pd.DataFrame({"patient": patients, "target": targets, "patch_probability": probs,
                         "probability": [0.5] * len(probs)})


# two patients, each with two IDC and two non-IDC patches
PATIENTS = ["a"] * 4 + ["b"] * 4
TARGETS = [1, 0, 1, 0] * 2
PERFECT = frame([0.9, 0.1, 0.8, 0.2] * 2, TARGETS, PATIENTS)  # every IDC patch above every other: AUROC 1
HALF = frame([0.9, 0.8, 0.1, 0.2] * 2, TARGETS, PATIENTS)  # 0.9 beats both negatives, 0.1 neither: AUROC 0.5
FLAT = frame([0.5] * 8, TARGETS, PATIENTS)  # all tied: AUROC 0.5 on every draw


def test_weighted_average_precision_is_sklearns():
    rng = np.random.default_rng(0)
    targets = rng.integers(0, 2, 300)
    probs = np.round(rng.random(300), 1)  # many ties
    weights = rng.integers(0, 4, 300).astype(float)
    ranked = RankedScores(targets, probs)
    assert ranked.auprc(weights) == pytest.approx(average_precision_score(targets, probs, sample_weight=weights))
    assert ranked.auprc(np.ones(300)) == pytest.approx(average_precision_score(targets, probs))
    assert np.isnan(ranked.auprc(weights * (targets == 0)))  # no positive weighs anything


def test_recompute_reads_the_patches_own_probability():
    assert recompute(PERFECT, "auroc") == 1.0 and recompute(HALF, "auroc") == 0.5
    # HALF ranked: 0.9 (IDC), 0.8, 0.2, 0.1 (IDC) per patient: precision 1 at the first IDC, 4/8 at the last
    assert recompute(HALF, "auprc") == pytest.approx((1 + 0.5) / 2)


def test_gains_are_paired_by_seed_and_the_interval_by_patient():
    gains, mean, low, high = paired_bootstrap([PERFECT, HALF], [FLAT, FLAT], "auroc", Rule(resamples=200))
    assert gains == [0.5, 0.0] and mean == 0.25
    assert low == high == 0.25  # every draw of these patients ranks alike: no patient noise
    same = paired_bootstrap([HALF], [HALF], "auroc", Rule(resamples=50))
    assert same == ([0.0], 0.0, 0.0, 0.0)  # the same draw on both sides: identical runs never differ


def test_the_interval_widens_with_patients_that_disagree():
    # patient a ranks better under the strategy, patient b worse: the mean gain is 0 and draws swing both ways
    strategy = frame([0.9, 0.1, 0.8, 0.2, 0.1, 0.9, 0.2, 0.8], TARGETS, PATIENTS)
    baseline = frame([0.1, 0.9, 0.2, 0.8, 0.9, 0.1, 0.8, 0.2], TARGETS, PATIENTS)
    _, mean, low, high = paired_bootstrap([strategy], [baseline], "auroc", Rule(resamples=400))
    assert mean == pytest.approx(0.0) and low < 0 < high
    _, _, narrow_low, narrow_high = paired_bootstrap([strategy], [baseline], "auroc",
                                                     Rule(resamples=400, confidence=0.5))
    assert low <= narrow_low <= narrow_high <= high and narrow_high - narrow_low < high - low  # rule.confidence


@pytest.mark.parametrize(("gains", "low", "high", "expected"), [
    ([0.02, 0.03], 0.001, 0.05, "better"),
    ([0.02, 0.005], 0.001, 0.05, "not separated"),  # one seed inside the margin
    ([0.02, 0.03], -0.001, 0.05, "not separated"),  # the interval holds 0
    ([-0.02, -0.03], -0.05, -0.001, "worse"),
    ([0.02, -0.03], -0.05, 0.05, "not separated"),
])
def test_call_needs_every_seed_beyond_the_margin_and_the_interval_off_zero(gains, low, high, expected):
    assert call(gains, low, high, margin=0.01) == expected


def test_verdict_table_calls_each_strategy_and_marks_missing_seeds_incomplete():
    predictions = {("bce", 1): FLAT, ("bce", 2): FLAT, ("focal", 1): PERFECT, ("focal", 2): PERFECT,
                   ("weighted", 1): FLAT, ("weighted", 2): FLAT, ("ranking", 1): PERFECT}
    table = verdict_table(predictions, ["bce", "focal", "weighted", "ranking"], "bce", [1, 2], "cv_val_pooled_auroc",
                          Rule(margin=0.1, resamples=100))
    assert list(table.columns) == ["strategy", "metric", "gain_seed_1", "gain_seed_2", "mean_gain", "ci_low",
                                   "ci_high", "verdict"]
    rows = table.set_index("strategy")
    assert rows.loc["focal", "verdict"] == "better" and rows.loc["focal", "gain_seed_2"] == 0.5
    assert rows.loc["weighted", "verdict"] == "not separated" and rows.loc["weighted", "ci_high"] == 0.0
    assert rows.loc["ranking", "verdict"] == "incomplete" and rows.loc["ranking", "gain_seed_1"] == 0.5
    assert np.isnan(rows.loc["ranking", "gain_seed_2"]) and np.isnan(rows.loc["ranking", "ci_low"])
    text = verdict_markdown(table, "smoke", "bce", "cv_val_pooled_auroc", Rule(margin=0.1, resamples=100))
    assert "exceeds 0.1" in text and "| focal " in text and "+0.5000" in text
    assert "**focal better than bce. Incomplete (a seed without a finished run): ranking;" in text
    assert text.splitlines()[0] == "# Study smoke: focal better than bce (incomplete: ranking)"  # the UI shows it


def test_conclusion_says_when_nothing_separates():
    table = pd.DataFrame({"strategy": ["focal", "ranking"], "verdict": ["not separated", "incomplete"]})
    assert conclusion(table, "bce").startswith("Nothing separates from bce. Incomplete (a seed without a finished "
                                               "run): ranking;")
    assert conclusion(table.iloc[1:], "bce").startswith("No verdict yet. Incomplete")
