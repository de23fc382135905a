"""The studies' decision rules and pure helpers (bench/*_study.py), on hand-made cases."""

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch
from mlflow.tracking import MlflowClient

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import recipe_study  # noqa: E402
from neighbourhood_screen import (  # noqa: E402
    Stage,
    decide,
    paired_patient_bootstrap,
    paired_seeds,
    settled,
    stage_verdict,
    validation_predictions,
    verdict,
)
from recipe_study import keep_predictions, last_epochs_val_auprc, separated  # noqa: E402
from tta_study import verdicts  # noqa: E402

STAGE_COLUMNS = {"minutes": 1.0, "oof_auroc": 0.9, "oof_balanced_accuracy": 0.8,
                 "oof_rule_youden_balanced_accuracy": 0.8, "oof_context_radius_1_auroc": 0.9,
                 "oof_context_radius_1_balanced_accuracy": 0.8, "oof_auroc_ci_low": 0.8, "oof_auroc_ci_high": 0.95}


def wrongly_ranked() -> pd.DataFrame:
    """Validation predictions of 20 patients, each with one negative scored above its one positive (AUROC 0)."""
    patients = [f"p{i}" for i in range(20)]
    return pd.DataFrame({"patient": np.repeat(patients, 2), "target": [0, 1] * 20, "probability": [0.6, 0.4] * 20})


@pytest.mark.parametrize(("gains", "call"), [
    ([0.011, 0.02], "better"),      # both seeds beyond the baseline's seed range (0.01)
    ([0.011, 0.009], "no"),         # one seed within it
    ([-0.02, -0.011], "worse"),
    ([0.02, -0.02], "no"),
    ([0.05], "too few seeds"),
])
def test_a_strategy_is_separated_only_when_every_seed_beats_the_baselines_seed_range(gains, call):
    base = pd.Series([0.70, 0.71], index=[1, 2])
    assert separated(pd.Series(gains, index=[1, 2][: len(gains)]), base) == call


def test_tta_verdicts_pair_each_seed_with_and_without_tta_in_the_same_context():
    rows = [{"context": context, "tta": tta, "seed": seed, "val_crossfit_auprc": auprc, "auroc": 0.9, "auprc": 0.7,
             "f1": 0.7, "balanced_accuracy": 0.8}
            for context, tta, seed, auprc in [
                ("none", False, 1, 0.70), ("none", False, 2, 0.71), ("none", True, 1, 0.72), ("none", True, 2, 0.73),
                ("radius 1", False, 1, 0.75), ("radius 1", False, 2, 0.76), ("radius 1", True, 1, 0.755),
                ("radius 1", True, 2, 0.77)]]
    table = verdicts(pd.DataFrame(rows)).set_index(["context", "tta"])
    assert table.loc[("none", True), "TTA"] == "better"  # +0.02, +0.02 against a range of 0.01
    assert table.loc[("radius 1", True), "TTA"] == "no"  # +0.005 is within it
    assert table.loc[("none", True), "Δ val_crossfit_auprc (per seed)"] == "+0.0200, +0.0200"


def test_the_slide_mean_averages_a_patchs_other_patches_of_the_same_patient_only():
    from slide_context_study import slide_matrix
    probs = np.array([0.2, 0.4, 0.9, 0.6, 0.1])
    matrix = slide_matrix(np.array(["a", "b", "a", "a", "c"]))
    # a: patches 0, 2, 3 -> each sees the mean of the other two; b and c have one patch -> empty rows
    np.testing.assert_allclose(matrix @ probs, [(0.9 + 0.6) / 2, 0, (0.2 + 0.6) / 2, (0.2 + 0.9) / 2, 0])
    assert matrix.getrow(1).nnz == 0 and matrix.getrow(4).nnz == 0


def test_the_confirmation_decides_by_pooled_validation_auroc_paired_by_seed():
    from recipe_study import CONFIRM_METRIC, confirmation
    filler = {name: 0.8 for name in ("last3_val_auprc", "best_val_auprc", "oof_f1", "oof_balanced_accuracy",
                                     "oof_auroc", "oof_context_radius_1_balanced_accuracy",
                                     "oof_context_radius_1_auroc", "oof_balanced_accuracy_ci_low",
                                     "oof_balanced_accuracy_ci_high", "oof_auroc_ci_low", "oof_auroc_ci_high")}
    table = pd.DataFrame([
        {"strategy": "baseline (bce)", "seed": 3, CONFIRM_METRIC: 0.890, "minutes": 15, **filler},
        {"strategy": "baseline (bce)", "seed": 4, CONFIRM_METRIC: 0.893, "minutes": 15, **filler},
        # paired gains +0.005 and +0.002: the second is inside the baseline's range (0.003)
        {"strategy": "12 epochs cosine+ema", "seed": 3, CONFIRM_METRIC: 0.895, "minutes": 27, **filler},
        {"strategy": "12 epochs cosine+ema", "seed": 4, CONFIRM_METRIC: 0.895, "minutes": 27,
         **(filler | {"best_val_auprc": 0.1})},  # the other metrics do not decide
    ])
    verdict = confirmation(table).set_index("strategy")
    assert verdict.loc["12 epochs cosine+ema", "separated"] == "no"
    assert verdict.loc["12 epochs cosine+ema", f"Δ {CONFIRM_METRIC} (per seed)"] == "+0.0050, +0.0020"
    table.loc[3, CONFIRM_METRIC] = 0.8965  # +0.0035 beyond the range
    assert confirmation(table).set_index("strategy").loc["12 epochs cosine+ema", "separated"] == "better"


def test_the_stacked_context_features_are_ring_means_and_fill_shares_of_the_same_patient():
    from stacked_context_study import features
    frame = pd.DataFrame({"patient": ["a"] * 4 + ["b"], "x": [0, 50, 100, 150, 0], "y": [0] * 5})
    table = features(frame, np.array([0.2, 0.4, 0.6, 0.8, 0.5]))
    # patch 0 has patch 1 on ring 1, patch 2 on ring 2, patch 3 on ring 3 (of 8, 16, 24 positions)
    np.testing.assert_allclose(table[0], [np.log(0.2 / 0.8), 0.4, 1 / 8, 0.6, 1 / 16, 0.8, 1 / 24])
    np.testing.assert_allclose(table[1], [np.log(0.4 / 0.6), (0.2 + 0.6) / 2, 2 / 8, 0.8, 1 / 16, 0, 0])
    np.testing.assert_allclose(table[4], [0, 0, 0, 0, 0, 0, 0])  # b is alone on its slide


def test_a_seed_ensemble_averages_the_same_patches_and_refuses_others():
    from seed_ensemble_study import averaged
    first = pd.DataFrame({"fold": [0, 0], "patient": ["a", "a"], "x": [0, 50], "y": [0, 0], "target": [1, 0],
                          "patch_probability": [0.8, 0.2]})
    second = first.assign(patch_probability=[0.6, 0.4])
    assert averaged([first, second])["patch_probability"].tolist() == pytest.approx([0.7, 0.3])
    with pytest.raises(ValueError, match="not of the same patches"):
        averaged([first, second.assign(x=[50, 0])])


@pytest.mark.parametrize(("ensembles", "call"), [
    ((0.905, 0.906), "better"),  # +0.010 and +0.011 over the members' means, beyond the seeds' range (0.006)
    ((0.905, 0.899), "no"),      # the second replicate gains +0.004 only
    ((0.885, 0.884), "worse"),  # -0.010 and -0.011
])
def test_the_seed_ensemble_verdict_needs_both_replicates_beyond_the_single_seeds_range(ensembles, call):
    from seed_ensemble_study import verdicts
    singles = {"seed 1": 0.892, "seed 2": 0.898, "seed 3": 0.894, "seed 4": 0.896}
    rows = [{"model": m, "context": "none", "val_pooled_auroc": v}
            for m, v in [*singles.items(), ("seeds 1 + 2", ensembles[0]), ("seeds 3 + 4", ensembles[1])]]
    assert set(verdicts(pd.DataFrame(rows))["better"]) == {call}



@pytest.mark.parametrize(("candidate", "call"), [
    ((0.905, 0.906), "better"),  # +0.007 and +0.007 over the recipe's ensembles, beyond the seeds' range (0.006)
    ((0.905, 0.901), "no"),      # the second seed gains +0.002 only
    ((0.890, 0.892), "worse"),   # -0.008 and -0.007
    ((0.905, None), "pending"),  # seed 3 not run yet
    ((0.902, None), "no"),       # seed 1 gains +0.004 only: neither call can hold, whatever seed 3 gives
])
def test_the_schedule_verdict_pairs_ensembles_of_the_same_seed(candidate, call):
    from paired_study import METRIC, NOISE_STRATEGY, STAGE_3, verdicts
    singles = (0.892, 0.898, 0.894, 0.896)
    rows = [{"strategy": NOISE_STRATEGY, "seed": s, METRIC: v} for s, v in zip((1, 2, 3, 4), singles, strict=True)]
    reference = STAGE_3.reference
    rows += [{"strategy": reference, "seed": 1, METRIC: 0.898}, {"strategy": reference, "seed": 3, METRIC: 0.899}]
    run = [(s, v, r) for s, v, r in zip((1, 3), candidate, (0.898, 0.899), strict=True) if v is not None]
    rows += [{"strategy": STAGE_3.candidate, "seed": s, METRIC: v} for s, v, _ in run]
    table = verdicts(pd.DataFrame(rows))
    assert table["gain"].tolist() == [f"{v - r:+.4f}" for _, v, r in run]
    assert set(table["better"]) == {call}


def halves_case() -> pd.DataFrame:
    """One fold, validation patients a and b (the halves): a is perfectly ranked, b is not."""
    return pd.DataFrame({"fold": 0, "patient": list("aaaabbbb"), "x": [0, 50, 100, 150] * 2, "y": 0,
                         "target": [1, 1, 0, 0, 1, 0, 1, 0],
                         "patch_probability": [0.9, 0.6, 0.4, 0.1, 0.8, 0.7, 0.3, 0.2]})


def test_a_fixed_threshold_cross_fitted_is_the_pooled_score_at_that_threshold():
    from threshold_rule_study import cross_fitted_operating_point
    values = cross_fitted_operating_point(halves_case(), ("fixed", {"value": 0.5}), ())
    assert values["f1"] == pytest.approx(0.75)  # a: 2 TP, 2 TN; b: 1 TP, 1 FP, 1 FN, 1 TN
    assert values["balanced_accuracy"] == pytest.approx(0.75)


def test_a_tuned_threshold_is_scored_on_the_half_it_was_not_tuned_on():
    from threshold_rule_study import cross_fitted_operating_point
    values = cross_fitted_operating_point(halves_case(), ("max_f1", {}), ())
    # tuned on b (max-F1 at 0.3) and scored on a: 2 TP, 1 FP, 1 TN; tuned on a (0.6), scored on b: 1 each
    assert values["f1"] == pytest.approx(2 * 3 / (2 * 3 + 2 + 1))
    assert values["recall"] == pytest.approx(0.75)
    assert values["specificity"] == pytest.approx(0.5)
    assert values["balanced_accuracy"] == pytest.approx(0.625)


@pytest.mark.parametrize(("gains", "call"), [
    ((0.01, 0.002), "youden"),   # higher cross-fitted validation BAC for both seeds
    ((0.01, -0.002), "max_f1"),  # the seeds disagree: the recipe keeps its rule
    ((-0.01, -0.002), "max_f1"),
])
def test_the_threshold_verdict_needs_both_seeds(gains, call):
    from threshold_rule_study import CHALLENGER, INCUMBENT, verdict
    rows = [{"seed": s, "rule": INCUMBENT, "val_crossfit_balanced_accuracy": 0.8} for s in (1, 3)]
    rows += [{"seed": s, "rule": CHALLENGER, "val_crossfit_balanced_accuracy": 0.8 + g}
             for s, g in zip((1, 3), gains, strict=True)]
    assert verdict(pd.DataFrame(rows)) == call


def test_slide_normalisation_gives_each_slide_the_target_and_keeps_differences_within_it():
    from slide_stain import normalised_by_slide, slide_statistics

    from idclab.models.stain import rgb_to_lab
    rng = np.random.default_rng(0)
    pale = rng.integers(150, 230, size=(3, 50, 50, 3), dtype=np.uint8)  # slide a: light staining
    dark = (pale * 0.6).astype(np.uint8)                                 # slide b: the same tissue, darker
    images = np.concatenate([pale, dark])
    images[0] = np.clip(images[0].astype(int) - 40, 0, 255)              # one denser patch on slide a
    patients = np.array(["a"] * 3 + ["b"] * 3)
    out = normalised_by_slide(images, patients, np.ones(6, bool))
    stats = slide_statistics(out, patients, np.ones(6, bool))
    np.testing.assert_allclose(stats["a"][0], stats["b"][0], atol=1.0)  # both slides now share one L*a*b* mean
    lightness = rgb_to_lab(torch.from_numpy(out).permute(0, 3, 1, 2).float() / 255)[:, 0].mean((1, 2))
    assert lightness[0] < lightness[1] - 5 and lightness[0] < lightness[2] - 5  # the dense patch stays darker
    untouched = normalised_by_slide(images, patients, np.array([False] + [True] * 5))
    assert (untouched[0] == images[0]).all()  # rows that did not decode are left as they are


def validation_run(probabilities):
    """A run's pooled validation predictions: patients a-d, two patches each (targets 0, 1, 0, 1, ...)."""
    return pd.DataFrame({"patient": list("aabbccdd"), "target": [0, 1] * 4, "probability": probabilities})


def test_the_paired_patient_bootstrap_centres_on_the_mean_gain_over_seeds_and_sees_patient_noise():
    reference = [validation_run([0.1, 0.25, 0.6, 0.5, 0.3, 0.9, 0.2, 0.8])] * 2  # AUROC 13/16
    perfect = validation_run([0.1, 0.9, 0.2, 0.8, 0.3, 0.7, 0.1, 0.6])  # AUROC 1
    same = reference[0]
    mean, low, high = paired_patient_bootstrap([perfect, same], reference, resamples=100)
    assert mean == pytest.approx((3 / 16 + 0.0) / 2)
    assert 0 <= low < mean < high <= 0.5  # which patients are drawn changes the gain
    assert paired_patient_bootstrap(reference, reference, resamples=20) == (0.0, 0.0, 0.0)
    blended = perfect.assign(patch_probability=same["probability"])  # a run with context: its patches' own P(IDC)
    assert paired_patient_bootstrap([blended], [same], resamples=10)[0] == 0.0


def test_the_gain_comes_from_the_patients_drawn():
    # the reference ranks only patient a's patches wrongly; the candidate ranks every patch right
    reference = [validation_run([0.9, 0.1, 0.1, 0.9, 0.1, 0.9, 0.1, 0.9])]
    candidate = [validation_run([0.1, 0.9] * 4)]
    mean, low, high = paired_patient_bootstrap(candidate, reference, resamples=150, seed=1)
    # of the 16 pairs, a's positive ties the 3 other negatives (1.5) and loses to a's; the other positives each tie
    # a's negative (0.5) and beat the rest (3): 12/16
    assert mean == pytest.approx(1 - 12 / 16)
    assert low == 0.0 < high  # a draw without patient a (about a third of them) gains nothing, none loses


@pytest.mark.parametrize(("gains", "low", "high", "call"), [
    ([0.006, 0.008], 0.001, 0.012, "better"),
    ([0.006, 0.008], -0.001, 0.012, "not separated"),   # seeds agree, but other patients might not
    ([0.006, 0.004], 0.001, 0.012, "not separated"),    # one seed inside the seed range
    ([-0.006, -0.008], -0.012, -0.001, "worse"),
])
def test_the_neighbourhood_verdict_needs_both_seeds_and_the_patient_interval(gains, low, high, call):
    assert verdict(gains, low, high, seed_range=0.0051) == call


class NoStore:
    """A tracking client whose store is gone (a new machine): any download fails."""

    def download_artifacts(self, run_id, path, folder):
        raise OSError(f"no store holds run {run_id}")


def test_a_runs_pooled_predictions_are_kept_in_the_repository_and_read_back_without_the_store(tmp_path, new_store):
    frame = validation_run([0.1234567, 0.9, 0.2, 0.8, 0.3, 0.7, 0.1, 0.6]).assign(
        patch_probability=[0.2, 0.8, 0.3, 0.7, 0.4, 0.6, 0.2, 0.5], x=range(8), y=range(8), file="p.png", fold=0)
    (tmp_path / "cv").mkdir()
    frame.to_csv(tmp_path / "cv" / "val_predictions.csv", index=False)
    frame.to_csv(tmp_path / "cv" / "oof_predictions.csv", index=False)
    client = MlflowClient(new_store(tmp_path))
    run_id = client.create_run(client.create_experiment("study", f"file:{tmp_path / 'artifacts'}")).info.run_id
    client.log_artifacts(run_id, str(tmp_path / "cv"), "cv")  # as cross-validation logs them
    kept = keep_predictions(client, run_id, tmp_path / "kept")
    assert sorted(p.name for p in kept) == [f"{run_id}-oof.csv.gz", f"{run_id}-val.csv.gz"]
    back = validation_predictions(NoStore(), run_id, tmp_path / "kept")
    assert list(back.columns) == ["patient", "target", "probability", "patch_probability", "x", "y", "fold"]
    assert back["probability"].iloc[0] == pytest.approx(0.123457)  # 6 decimals: a ranking needs no more
    assert paired_patient_bootstrap([back], [frame], resamples=5)[0] == 0.0
    with pytest.raises(OSError, match="no store"):  # neither kept nor in a store: said so
        validation_predictions(NoStore(), "other", tmp_path / "kept")


def test_a_study_records_the_run_its_own_training_made_in_the_projects_store(tmp_path, new_store, monkeypatch):
    """The training subprocess logs to the project's store whatever MLFLOW_TRACKING_URI says, and the row is the
    cross-validation it started: not an older one, and none when it cannot tell which."""
    uri = new_store(tmp_path)
    client = MlflowClient(uri)
    experiment = client.create_experiment(recipe_study.EXPERIMENT)

    def cross_validation() -> str:
        run_id = client.create_run(experiment, tags={"cv": "parent"}).info.run_id
        client.set_terminated(run_id, "FINISHED")
        return run_id

    older = cross_validation()
    recorded, made = [], []

    made_per_call = iter((1, 0, 2))  # its own run; none (the older runs are not taken for it); two: which one?

    def training(command, cwd, env):
        assert env["MLFLOW_TRACKING_URI"] == uri  # the project's store, not the caller's
        made.extend(cross_validation() for _ in range(next(made_per_call)))
        return 0

    monkeypatch.setattr(recipe_study, "PROJECT", tmp_path)
    monkeypatch.setattr(recipe_study, "record", lambda client, run_id, *rest: recorded.append(run_id))
    monkeypatch.setattr(recipe_study.subprocess, "call", training)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'elsewhere.db'}")
    for _ in range(3):
        recipe_study.run_one("baseline (bce)", 1, tmp_path / "results.csv")
    assert recorded == made[:1] and older not in recorded


def test_a_stage_is_decided_only_on_seeds_both_arms_finished_and_says_which_are_missing():
    runs = pd.DataFrame({"strategy": ["cand", "ref", "ref", "cand"], "seed": [1, 1, 3, 5]})
    assert paired_seeds(runs, "cand", "ref", (1, 3)) == ([1], [3])
    assert paired_seeds(runs, "cand", "ref", (5,)) == ([], [5])


@pytest.mark.parametrize(("gains", "is_settled"), [
    ([0.0041], True),             # within the seed range (0.0051): no later seed can make every seed pass it
    ([-0.003], True),
    ([0.009, -0.008], True),      # beyond it on both sides: neither better nor worse can hold
    ([0.009], False),             # a later seed could still pass (better) or not
    ([-0.009, -0.007], False),
])
def test_a_call_is_settled_early_only_when_no_missing_seed_can_change_it(gains, is_settled):
    assert settled(gains, seed_range=0.0051) is is_settled


class StoredPredictions:
    """A tracking client whose store holds each run's `cv/val_predictions.csv` (runs keyed by id)."""

    def __init__(self, frames):
        self.frames = frames

    def download_artifacts(self, run_id, path, folder):
        self.frames[run_id].to_csv(Path(folder) / "val_predictions.csv", index=False)
        return str(Path(folder) / "val_predictions.csv")


def test_a_stage_reads_the_candidate_and_reference_rows_from_their_own_files_and_writes_its_call(tmp_path):
    wrong = wrongly_ranked()
    right = wrong.assign(probability=[0.4, 0.6] * 20)  # every patient's positive now above its negative
    columns = STAGE_COLUMNS
    pd.DataFrame([{"strategy": "ref", "seed": s, "run_id": f"r{s}", "cv_val_pooled_auroc": 0.0, **columns}
                  for s in (1, 3)]).to_csv(tmp_path / "reference.csv", index=False)
    pd.DataFrame([{"strategy": "cand", "seed": 1, "run_id": "c1", "cv_val_pooled_auroc": 1.0, **columns}]
                 ).to_csv(tmp_path / "candidate.csv", index=False)
    stage = Stage("cand", "ref", (1, 3), tmp_path / "reference.csv", "A test stage", tmp_path / "stage.md",
                  tmp_path / "candidate.csv", "bench/a_screen.py")
    client = StoredPredictions({"r1": wrong, "r3": wrong, "c1": right, "c3": right})
    assert "Incomplete: seed(s) 3 not run yet, so no call" in stage_verdict(stage, client)
    frame = pd.read_csv(tmp_path / "candidate.csv")
    pd.concat([frame, frame.assign(seed=3, run_id="c3")]).to_csv(tmp_path / "candidate.csv", index=False)
    doc = stage_verdict(stage, client)
    assert "**Call: better.**" in doc and "Mean gain +1.0000" in doc and "`bench/a_screen.py`" in doc
    assert (tmp_path / "stage.md").read_text() == doc


class FoldCurves:
    """A tracking client whose cross-validation folds logged the given `val_auprc` curves (empty: a seed ensemble's
    fold, whose curves are its members')."""

    def __init__(self, curves):
        self.curves = curves

    def search_runs(self, experiments, query):
        return [SimpleNamespace(info=SimpleNamespace(run_id=str(fold))) for fold in range(len(self.curves))]

    def get_metric_history(self, run_id, key):
        return [SimpleNamespace(step=step, value=value) for step, value in enumerate(self.curves[int(run_id)])]


def test_last_epochs_validation_auprc_averages_folds_and_is_absent_when_no_fold_logged_a_curve():
    values = last_epochs_val_auprc(FoldCurves([[0.1, 0.5, 0.6, 0.7], [0.2, 0.3]]), "1", "parent")
    assert values == pytest.approx({"last_val_auprc": (0.7 + 0.3) / 2, "last3_val_auprc": (0.6 + 0.25) / 2})
    assert last_epochs_val_auprc(FoldCurves([[], []]), "1", "parent") == {}


def test_a_pooled_auroc_splits_exactly_into_same_patient_and_cross_patient_pairs():
    from patient_offsets import within_and_across
    # patient a ranks its own pair right (0.3 < 0.4), b too (0.8 < 0.9), but a's positive is below b's negative
    parts = within_and_across(np.array([0, 1, 0, 1]), np.array([0.3, 0.4, 0.8, 0.9]), np.array(list("aabb")))
    # pairs: (a+, a-) win, (b+, b-) win, (a+, b-) loss, (b+, a-) win: pooled 3/4, within 2/2, across 1/2
    assert parts == pytest.approx({"pooled": 0.75, "within": 1.0, "across": 0.5, "within_share": 0.5})
    tied = within_and_across(np.array([0, 1, 0, 1]), np.array([0.5, 0.5, 0.5, 0.5]), np.array(list("aabb")))
    assert tied["pooled"] == tied["within"] == tied["across"] == pytest.approx(0.5)
    apart = within_and_across(np.array([0, 0, 1, 1]), np.array([0.1, 0.6, 0.5, 0.9]), np.array(list("aabb")))
    assert np.isnan(apart["within"]) and apart["across"] == apart["pooled"] == pytest.approx(3 / 4)


def test_the_rule_reads_the_gains_unrounded(tmp_path):
    """A gain of 0.00514 is beyond a seed range of 0.0051 even though it prints as +0.0051."""
    wrong = wrongly_ranked()
    right = wrong.assign(probability=[0.4, 0.6] * 20)
    runs = pd.DataFrame([{"strategy": name, "seed": seed, "run_id": f"{name}{seed}", "cv_val_pooled_auroc": value}
                         for name, seed, value in [("ref", 1, 0.9), ("ref", 3, 0.9), ("cand", 1, 0.90514),
                                                   ("cand", 3, 0.92)]])
    client = StoredPredictions({"ref1": wrong, "ref3": wrong, "cand1": right, "cand3": right})
    table, text = decide(runs, "cand", "ref", (1, 3), client)
    assert table["gain"].tolist() == ["+0.0051", "+0.0200"] and "**Call: better.**" in text


def test_the_paired_bootstrap_needs_a_reference_run_for_every_candidate_run():
    run = validation_run([0.1, 0.9, 0.2, 0.8, 0.3, 0.7, 0.1, 0.6])
    with pytest.raises(ValueError, match="2 candidate runs against 1 reference"):
        paired_patient_bootstrap([run, run], [run], resamples=5)


def test_a_paired_draw_without_both_classes_is_left_out_of_the_interval():
    # patient a holds the negatives, b the positives: a draw of one of them alone has no AUROC
    run = pd.DataFrame({"patient": list("aabb"), "target": [0, 0, 1, 1], "probability": [0.1, 0.2, 0.8, 0.9]})
    assert paired_patient_bootstrap([run], [run.assign(probability=[0.1, 0.9, 0.8, 0.2])], resamples=50) == (
        pytest.approx(0.5), pytest.approx(0.5), pytest.approx(0.5))


def test_the_recipe_study_runs_only_its_own_strategies_and_leaves_every_screens_to_its_script():
    import recipe_screens
    from recipe_study import CHOSEN_ELSEWHERE, STRATEGIES, STUDY_STRATEGIES

    screened = {name for stage in recipe_screens.STAGES.values() for name in (stage.candidate, stage.reference)}
    assert screened <= STRATEGIES.keys() and screened <= CHOSEN_ELSEWHERE.keys()
    assert not screened & set(STUDY_STRATEGIES)
    assert STUDY_STRATEGIES[0] == "baseline (bce)" and len(STUDY_STRATEGIES) == 13  # stage 1's strategies


def test_the_learning_curves_points_are_the_screens_model_on_a_share_and_its_slope_is_per_doubling():
    import learning_curve
    from recipe_study import CHOSEN_ELSEWHERE, STRATEGIES

    for axis, share, name in learning_curve.points():
        if share < 1:
            assert STRATEGIES[name] == [*STRATEGIES[learning_curve.MODEL], f"cv.train_{axis}={share}"]
            assert name in CHOSEN_ELSEWHERE
    assert learning_curve.doubling_slope(np.array([0.25, 0.5, 1.0]), np.array([0.90, 0.91, 0.92])) == \
        pytest.approx(0.01)
    runs = pd.DataFrame({"strategy": [learning_curve.point_name("patients", 0.25)] * 2
                         + [learning_curve.point_name("patients", 0.5), learning_curve.MODEL],
                         "seed": [1, 2, 1, 1], "cv_val_pooled_auroc": [0.88, 0.90, 0.90, 0.91],
                         "oof_auroc": [0.90, 0.92, 0.92, 0.93], "oof_rule_youden_balanced_accuracy": [0.8] * 4})
    table = learning_curve.curve_table(runs)
    patients = table[table["axis"] == "patients"]
    assert patients["share"].tolist() == [0.25, 0.5, 1.0] and patients["seeds"].tolist() == ["1 2", "1", "1"]
    assert patients["oof_auroc"].tolist() == pytest.approx([0.91, 0.92, 0.93])
    (row,) = learning_curve.extrapolations(table).query("measure == 'out-of-fold AUROC'").itertuples()
    assert row.per_doubling == pytest.approx(0.01)
    assert row.at_full_download == pytest.approx(0.93 + 0.01 * np.log2(279 / 230))
    assert (table["axis"] == "patches").sum() == 1  # only the shared reference: no slope without its shares
    assert "patches" not in set(learning_curve.extrapolations(table)["axis"])


def test_a_study_stopped_by_sigterm_stops_its_training_run_too():
    """`kill <study>` must reach the training process, whose runs then end KILLED: left alone, an orphaned run kept
    training and stayed RUNNING in the store."""
    started = threading.Event()
    children: list[subprocess.Popen] = []

    def spawn(*args, **kwargs):
        children.append(subprocess.Popen(*args, **kwargs))
        started.set()
        return children[-1]

    def stop_the_study():
        if started.wait(120):  # generous: a loaded machine can be slow to start a process
            os.kill(os.getpid(), signal.SIGTERM)

    before = signal.getsignal(signal.SIGTERM)
    stopper = threading.Thread(target=stop_the_study)
    stopper.start()
    with pytest.raises(SystemExit) as stopped:
        recipe_study.run_to_end([sys.executable, "-c", "import time; time.sleep(60)"], spawn=spawn)
    stopper.join()
    assert stopped.value.code == 128 + signal.SIGTERM
    assert children[0].poll() == -signal.SIGTERM  # terminated and reaped, not orphaned
    assert signal.getsignal(signal.SIGTERM) == before  # the handler was this call's only
    assert recipe_study.run_to_end([sys.executable, "-c", "raise SystemExit(3)"]) == 3


def test_a_sigterm_delivered_to_another_thread_still_stops_the_training_process_soon():
    """A process-directed signal may land on any thread; the study's main thread, waiting for its child, must still
    pass it on within seconds, not when the child ends by itself."""
    children: list[subprocess.Popen] = []
    started = threading.Event()

    def spawn(*args, **kwargs):
        children.append(subprocess.Popen(*args, **kwargs))  # the child inherits an unblocked SIGTERM
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})  # the study's main thread now leaves it
        started.set()
        return children[-1]

    def stop_the_study():
        if started.wait(120):
            time.sleep(0.5)  # let the main thread settle into its wait
            os.kill(os.getpid(), signal.SIGTERM)  # only this thread leaves SIGTERM unblocked: it lands here

    stopper = threading.Thread(target=stop_the_study)
    stopper.start()
    begun = time.monotonic()
    try:
        with pytest.raises(SystemExit):
            recipe_study.run_to_end([sys.executable, "-c", "import time; time.sleep(30)"], spawn=spawn)
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})
        stopper.join()
    assert children[0].poll() == -signal.SIGTERM and time.monotonic() - begun < 20


def test_a_sigterm_while_the_training_process_starts_is_not_lost():
    children: list[subprocess.Popen] = []

    def spawn_while_stopped(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGTERM)  # lands before the process exists
        children.append(subprocess.Popen(*args, **kwargs))
        return children[-1]

    with pytest.raises(SystemExit):
        recipe_study.run_to_end([sys.executable, "-c", "import time; time.sleep(60)"], spawn=spawn_while_stopped)
    assert children[0].poll() == -signal.SIGTERM


def test_pair_ensembles_score_each_average_against_its_better_member():
    from pair_ensembles import pair_table

    def model(probabilities):
        return pd.DataFrame({"fold": 0, "patient": "p", "x": [0, 50, 100, 150], "y": 0, "target": [0, 0, 1, 1],
                             "patch_probability": probabilities})

    models = {("a", 1): model([0.125, 0.625, 0.5, 0.875]),  # AUROC 3/4: a negative outranks a positive
              ("a", 2): model([0.625, 0.125, 0.875, 0.5]),  # 3/4 likewise
              ("b", 1): model([0.25, 0.375, 0.5, 1.0])}     # 1 (values exact in binary: ties are ties)
    table = pair_table(models).set_index(["a", "b"])
    seeds = table.loc[("a s1", "a s2")]  # average 0.375, 0.375, 0.6875, 0.6875: AUROC 1, +0.25 over 0.75
    assert bool(seeds["same"]) and seeds["average"] == pytest.approx(1.0)
    assert seeds["gain_over_better"] == pytest.approx(0.25)
    mixed = table.loc[("a s1", "b s1")]  # average 0.1875, 0.5, 0.5, 0.9375: a tie counts half, AUROC 7/8
    assert not bool(mixed["same"]) and mixed["average"] == pytest.approx(7 / 8)
    assert mixed["gain_over_better"] == pytest.approx(7 / 8 - 1)


def test_slide_features_that_explain_each_slides_offset_raise_the_cross_fitted_auroc():
    from slide_colour_offsets import cross_fitted_auroc, with_logits

    rng = np.random.default_rng(0)
    patients = np.repeat([f"p{i}" for i in range(20)], 40)
    offsets = np.repeat(rng.normal(0, 2, 20), 40)  # each slide's scores shifted by its own amount...
    targets = rng.integers(0, 2, len(patients))
    logits = 2.0 * targets - 1 + offsets + rng.normal(0, 0.5, len(patients))
    predictions = pd.DataFrame({"patient": patients, "target": targets, "patch_probability": 1 / (1 + np.exp(-logits))})
    colours = pd.DataFrame({"patient": [f"p{i}" for i in range(20)], "r": offsets[::40]})  # ...that "r" gives away
    frame = with_logits(predictions, colours)
    assert frame["slide_logit"].nunique() == 20
    alone, explained = cross_fitted_auroc(frame, ["logit"]), cross_fitted_auroc(frame, ["logit", "r"])
    assert explained > alone + 0.1 and explained > 0.95


def test_the_screens_summary_lists_each_screens_gains_call_and_out_of_fold_figures(tmp_path):
    from recipe_screens import screens_table

    pd.DataFrame({"strategy": ["ref", "ref"], "seed": [1, 2], "cv_val_pooled_auroc": [0.90, 0.91],
                  "oof_auroc": [0.92, 0.94]}).to_csv(tmp_path / "ref.csv", index=False)
    pd.DataFrame({"strategy": ["cand"], "seed": [1], "cv_val_pooled_auroc": [0.9025],
                  "oof_auroc": [0.95]}).to_csv(tmp_path / "cand.csv", index=False)
    (tmp_path / "cand.md").write_text("... **Call: not separated**, before seed(s) 2: ...")
    done_once = Stage("cand", "ref", (1, 2), tmp_path / "ref.csv", "t", tmp_path / "cand.md", tmp_path / "cand.csv")
    never_run = Stage("other", "ref", (1, 2), tmp_path / "ref.csv", "t", tmp_path / "none.md", tmp_path / "none.csv")
    table = screens_table({"cand": done_once, "other": never_run}).set_index("screen")
    assert table.loc["cand", "seeds"] == "1" and table.loc["cand", "validation AUROC gain"] == "+0.0025"
    assert table.loc["cand", "call"] == "not separated"
    assert (table.loc["cand", "OOF AUROC, candidate"], table.loc["cand", "OOF AUROC, reference"]) == ("0.950", "0.920")
    assert (table.loc["other", "seeds"], table.loc["other", "call"]) == ("none run", "not run")


@pytest.mark.parametrize(("gains", "low", "high", "call"), [
    ([0.004, 0.004, 0.005, 0.003], 0.001, 0.008, "better"),         # all gain, mean 0.004 > 0.0051 / 2
    ([0.004, 0.004, 0.005, -0.001], 0.001, 0.008, "not separated"),  # one seed loses
    ([0.002, 0.002, 0.003, 0.002], 0.001, 0.004, "not separated"),   # all gain, mean 0.00225 below 0.00255
    ([0.004, 0.004, 0.005, 0.003], -0.001, 0.008, "not separated"),  # other patients might not gain
    ([-0.004, -0.004, -0.005, -0.003], -0.008, -0.001, "worse"),
    ([-0.004, -0.004, -0.005, -0.003], -0.008, 0.0, "not separated"),  # the interval touches 0
    ([-0.002, -0.002, -0.003, -0.002], -0.004, -0.001, "not separated"),  # the mean inside the margin
    ([0.004, 0.004, 0.005, 0.0], 0.001, 0.008, "not separated"),     # a gain of exactly 0 is no gain
])
def test_the_small_effect_verdict_needs_every_seed_to_gain_a_mean_beyond_the_range_of_a_mean_and_the_interval(
        gains, low, high, call):
    from neighbourhood_screen import small_effect_verdict

    assert small_effect_verdict(gains, low, high, seed_range=0.0051) == call


@pytest.mark.parametrize(("gains", "is_settled"), [
    ([0.004, -0.001], True),   # the signs differ: every seed can no longer gain (or lose)
    ([0.004, 0.0], True),      # no gain is no gain
    ([0.0001, 0.0002], False),  # small gains: four seeds could still pass together
    ([-0.003], False),
])
def test_a_small_effect_call_is_settled_early_only_when_the_seeds_disagree_in_sign(gains, is_settled):
    from neighbourhood_screen import small_effect_settled

    assert small_effect_settled(gains) is is_settled


def test_a_stage_reports_earlier_seeds_beside_a_call_its_new_seeds_decide(tmp_path, monkeypatch):
    import neighbourhood_screen

    wrong = wrongly_ranked()
    right = wrong.assign(probability=[0.4, 0.6] * 20)
    columns = STAGE_COLUMNS

    def rows(strategy, seeds, score):
        return pd.DataFrame([{"strategy": strategy, "seed": s, "run_id": f"{strategy}{s}",
                              "cv_val_pooled_auroc": score, **columns} for s in seeds])

    rows("ref", (1, 2), 0.900).to_csv(tmp_path / "ref_screen.csv", index=False)
    pd.concat([rows("cand", (1, 2), 0.890), rows("ref", (1,), 0.5)]).to_csv(tmp_path / "cand_screen.csv",
                                                                              index=False)
    stage = Stage("cand", "ref", (3, 4), tmp_path / "seeds.csv", "New seeds", tmp_path / "seeds.md",
                  tmp_path / "seeds.csv", "bench/a_screen.py", small_effect=True, reported_seeds=(1, 2),
                  earlier=(("ref", tmp_path / "ref_screen.csv"), ("cand", tmp_path / "cand_screen.csv")))
    trained = []

    def run_one(strategy, seed, results):
        trained.append((strategy, seed))
        frame = neighbourhood_screen.done(results)
        score = 0.904 if strategy == "cand" else 0.900
        pd.concat([frame, rows(strategy, (seed,), score)]).to_csv(results, index=False)

    monkeypatch.setattr(neighbourhood_screen, "run_one", run_one)
    neighbourhood_screen.train_stage(stage, stage.seeds)
    assert trained == [("ref", 3), ("cand", 3), ("ref", 4), ("cand", 4)]
    runs = neighbourhood_screen.stage_runs(stage)
    assert len(runs) == 8  # the reference's rows come from its own earlier file only
    assert runs.query("strategy == 'ref' and seed == 1")["cv_val_pooled_auroc"].item() == 0.900
    client = StoredPredictions({f"ref{s}": wrong for s in (1, 2, 3, 4)} | {f"cand{s}": right for s in (1, 2, 3, 4)})
    doc = stage_verdict(stage, client)
    # +0.004 on seeds 3 and 4: below the seed range 0.0051, beyond 0.0051 / sqrt(2); seeds 1 and 2 lost, unheard
    assert "**Call: better.**" in doc and "beyond ±0.0036" in doc
    assert "seed 1 -0.0100, seed 2 -0.0100; the mean gain over all 4 seeds is -0.0030" in doc


def test_a_stage_refuses_two_different_runs_of_one_strategy_and_seed(tmp_path):
    from neighbourhood_screen import stage_runs

    pd.DataFrame({"strategy": ["cand"], "seed": [1], "run_id": ["a"]}).to_csv(tmp_path / "own.csv", index=False)
    pd.DataFrame({"strategy": ["cand"], "seed": [1], "run_id": ["b"]}).to_csv(tmp_path / "old.csv", index=False)
    pd.DataFrame({"strategy": ["ref"], "seed": [1], "run_id": ["r"]}).to_csv(tmp_path / "ref.csv", index=False)
    same = Stage("cand", "ref", (1,), tmp_path / "ref.csv", "t", tmp_path / "t.md", tmp_path / "own.csv",
                 earlier=(("cand", tmp_path / "own.csv"),))
    assert len(stage_runs(same)) == 2  # the same run read twice counts once
    other = Stage("cand", "ref", (1,), tmp_path / "ref.csv", "t", tmp_path / "t.md", tmp_path / "own.csv",
                  earlier=(("cand", tmp_path / "old.csv"),))
    with pytest.raises(ValueError, match="'cand' seed 1 has 2 different runs"):
        stage_runs(other)


def test_the_depth_seeds_screen_decides_on_new_seeds_by_the_small_effect_rule_and_reports_the_lead():
    from recipe_screens import STAGES

    stage = STAGES["depth-seeds"]
    assert (stage.seeds, stage.reported_seeds, stage.small_effect) == ((3, 4), (1, 2), True)
    runs = __import__("neighbourhood_screen").stage_runs(stage)
    assert paired_seeds(runs, stage.candidate, stage.reference, (1, 2))[0] == [1, 2]  # the lead's runs are found
