"""Patient-grouped k-fold cross-validation: folds, pooled out-of-fold metrics, runs, the ensemble model."""

from __future__ import annotations

import json
import os
import time
import warnings
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import pytorch_lightning as pl
import torch
from conftest import TINY_TRAINER, copy_patches
from mlflow.tracking import MlflowClient
from sklearn.metrics import average_precision_score, roc_auc_score

from idclab.classifier.ensemble import EnsembleClassifier
from idclab.config.build import load_classifier
from idclab.config.validation import ConfigError
from idclab.evaluation.evaluate import evaluate
from idclab.evaluation.oof import (
    blend_at,
    context_rules,
    cross_fitted,
    ensemble_operating_point,
    patient_table,
    pooled_metrics,
    radius_neighbours,
    threshold_rules,
    validation_halves,
)
from idclab.tracking.runs import RunNotFoundError
from idclab.training.crossval import fold_split, patient_folds
from idclab.training.fit import FitResult, fit_and_test
from idclab.training.fold_record import ARRAYS, RECORD, kept_fold, save_fold
from idclab.training.pipeline import train
from idclab.training.resume import (
    LAST_CHECKPOINT,
    STATE_FILE,
    ResumeError,
    find_resume_point,
    last_checkpoint,
    write_state,
)

PATIENTS = np.repeat([f"p{i}" for i in range(10)], 6)
LABELS = np.tile([0, 0, 0, 0, 1, 1], 10)


def test_folds_group_patients_and_cover_each_once():
    folds = patient_folds(PATIENTS, LABELS, folds=5, seed=0)
    flat = [p for fold in folds for p in fold]
    assert sorted(flat) == sorted(set(PATIENTS)) and len(flat) == 10
    assert all(len(fold) == 2 for fold in folds)
    assert patient_folds(PATIENTS, LABELS, 5, seed=0) == folds
    assert patient_folds(PATIENTS, LABELS, 5, seed=1) != folds


def test_next_fold_validation_has_every_patient_validate_exactly_once():
    """cv.val=next_fold: fold k is tuned on fold k+1's patients (the last on the first's) and trained on the rest,
    so the validation predictions pooled over folds hold every patient once, not a random ~half of them twice."""
    data = SimpleNamespace(index=SimpleNamespace(patients=PATIENTS, labels=LABELS))
    pool = np.arange(len(PATIENTS))
    folds = patient_folds(PATIENTS, LABELS, folds=5, seed=0)
    validated = []
    for fold, patients in enumerate(folds):
        split = fold_split(data, pool, folds, fold, "next_fold", seed=fold)
        assert split.patients["test"] == patients and split.patients["val"] == folds[(fold + 1) % 5]
        assert sorted(split.patients["train"]) == sorted(set(PATIENTS) - set(patients) - set(folds[(fold + 1) % 5]))
        assert set(PATIENTS[split.rows["val"]]) == set(folds[(fold + 1) % 5])
        validated += split.patients["val"]
    assert sorted(validated) == sorted(set(PATIENTS))
    shared = fold_split(data, pool, folds, 0, 0.25, seed=0)  # a share: drawn from the four other folds
    assert len(shared.patients["val"]) == 2 and not set(shared.patients["val"]) & set(folds[0])


def test_a_learning_curve_thins_only_the_folds_training_data():
    """cv.train_patients / cv.train_patches: each fold trains on a share of its training patients (patches); its
    validation and out-of-fold patients are those of the full run, so the points of a curve are paired."""
    data = SimpleNamespace(index=SimpleNamespace(patients=PATIENTS, labels=LABELS))
    pool = np.arange(len(PATIENTS))
    folds = patient_folds(PATIENTS, LABELS, folds=5, seed=0)
    full = fold_split(data, pool, folds, 0, "next_fold", seed=0)
    thin = fold_split(data, pool, folds, 0, "next_fold", seed=0, train_patients=0.5)
    assert len(thin.patients["train"]) == 3 and set(thin.patients["train"]) < set(full.patients["train"])
    assert set(PATIENTS[thin.rows["train"]]) == set(thin.patients["train"])
    for split in ("val", "test"):
        assert thin.patients[split] == full.patients[split]
        assert np.array_equal(thin.rows[split], full.rows[split])
    assert thin.notes["train_patients"] == 0.5
    sparse = fold_split(data, pool, folds, 0, "next_fold", seed=0, train_patches=0.5)
    assert sparse.patients["train"] == full.patients["train"] and len(sparse.rows["train"]) == 18  # 3 of 6 each
    assert set(sparse.rows["train"]) < set(full.rows["train"])
    assert np.array_equal(sparse.rows["val"], full.rows["val"])


def test_pooled_metrics_label_each_patch_at_its_own_fold_threshold():
    targets = np.array([1, 1, 0, 0])
    probs = np.array([0.6, 0.3, 0.5, 0.1])
    # fold A (threshold 0.7): 0.6 -> 0 (FN), 0.5 -> 0 (TN); fold B (threshold 0.2): 0.3 -> 1 (TP), 0.1 -> 0 (TN)
    thresholds = np.array([0.7, 0.2, 0.7, 0.2])
    metrics = pooled_metrics(targets, probs, thresholds)
    assert (metrics["tp"], metrics["fn"], metrics["tn"], metrics["fp"]) == (1, 1, 2, 0)
    assert metrics["recall"] == pytest.approx(0.5) and metrics["precision"] == pytest.approx(1.0)
    assert metrics["auroc"] == pytest.approx(0.75)  # from the probabilities, not the labels


VAL = pd.DataFrame({"fold": [0] * 5 + [1] * 2, "target": [1, 1, 0, 0, 0, 1, 0],
                    "probability": [0.9, 0.6, 0.7, 0.2, 0.1, 0.3, 0.1]})
OOF = pd.DataFrame({"fold": [0, 0, 1, 1], "target": [1, 0, 1, 0], "probability": [0.55, 0.65, 0.4, 0.35]})


def test_threshold_rules_tune_on_each_folds_validation_and_label_its_out_of_fold_patches():
    table = threshold_rules(VAL, OOF).set_index("rule")
    # max_f1: fold 0 -> 0.6 (F1 0.8 on validation), fold 1 -> 0.3: FN, FP | TP, FP
    assert table.loc["max_f1", "threshold_mean"] == pytest.approx(0.45)
    assert table.loc["max_f1", "f1"] == pytest.approx(0.4) and table.loc["max_f1", "balanced_accuracy"] == 0.25
    # fixed 0.5: TP, FP | FN, TN
    assert table.loc["fixed", "f1"] == pytest.approx(0.5) and table.loc["fixed", "balanced_accuracy"] == 0.5
    assert table.loc["youden", "threshold_mean"] == pytest.approx(0.45)  # J: 0.667 at 0.6; 1 at 0.3
    assert table.loc["sensitivity", "sensitivity"] == 0.5  # 0.9 on each validation: 0.6 and 0.3 again


def test_threshold_rules_use_each_rules_own_options_and_method():
    rules = {"lenient": ("sensitivity", {"target_sensitivity": 0.5}), "low": ("fixed", {"value": 0.3})}
    table = threshold_rules(VAL, OOF, rules).set_index("rule")
    # sensitivity 0.5: fold 0 -> 0.9 (one of two positives), fold 1 -> 0.3: FN, TN | TP, FP
    assert table.loc["lenient", "threshold_mean"] == pytest.approx(0.6)
    assert table.loc["lenient", "sensitivity"] == 0.5 and table.loc["lenient", "specificity"] == 0.5
    # fixed 0.3: every out-of-fold patch is >= 0.3: TP, FP | TP, FP
    assert table.loc["low", "sensitivity"] == 1.0 and table.loc["low", "specificity"] == 0.0


def test_threshold_rules_fall_back_on_a_single_class_validation_and_refuse_a_missing_fold():
    one_class = VAL.assign(target=np.where(VAL["fold"] == 1, 0, VAL["target"]))
    table = threshold_rules(one_class, OOF, {"max_f1": ("max_f1", {"value": 0.5})}).set_index("rule")
    assert table.loc["max_f1", "threshold_mean"] == pytest.approx((0.6 + 0.5) / 2)  # fold 1 falls back to 0.5
    with pytest.raises(ValueError, match=r"fold\(s\) \[1\]"):
        threshold_rules(VAL[VAL["fold"] == 0], OOF)


def slide(patient: str, fold: int) -> pd.DataFrame:
    """A row of three IDC patches the model misses once, and far below it a row of tissue with one false alarm."""
    return pd.DataFrame({"fold": fold, "patient": patient, "x": [0, 50, 100] * 2, "y": [0, 0, 0, 500, 500, 500],
                         "target": [1, 1, 1, 0, 0, 0], "probability": [0.9, 0.1, 0.9, 0.1, 0.8, 0.1]})


def test_context_rules_tune_weight_then_threshold_on_validation_and_apply_both_out_of_fold():
    table = context_rules(slide("v", 0), slide("o", 0), ("max_f1", {})).set_index("context")
    # no context: max-F1 on validation at 0.9 (F1 0.8) -> out of fold TP 2, FN 1, TN 3; AUROC 7/9
    assert table.loc["none", "f1"] == pytest.approx(0.8) and table.loc["none", "sensitivity"] == pytest.approx(2 / 3)
    assert table.loc["none", "auroc"] == pytest.approx(7 / 9) and table.loc["none", "weight_mean"] == 0
    # radius 1 and 2: the first weight ranking the missed IDC patch above the false alarm is 0.5 (> 7/15);
    # then every IDC patch scores above every other one, on validation and out of fold
    for radius in ("radius 1", "radius 2"):
        assert table.loc[radius, "weight_mean"] == 0.5
        assert table.loc[radius, ["auroc", "f1", "balanced_accuracy"]].tolist() == [1.0, 1.0, 1.0]


def test_cross_fitting_blends_each_half_of_the_validation_patients_at_the_weight_of_the_other():
    tissue = slide("b", 0).assign(target=0)  # all negative: no weight can be tuned on it (0)
    val = pd.concat([slide("a", 0), tissue])
    blended = cross_fitted(val, "probability", (radius_neighbours(1),))
    assert blended[:6].tolist() == pytest.approx(val["probability"][:6].tolist())  # a: at b's weight, 0
    assert blended[6:].tolist() == pytest.approx([0.5, 0.5, 0.5, 0.45, 0.45, 0.45])  # b: at a's weight, 0.5
    table = context_rules(val, slide("o", 0), ("max_f1", {})).set_index("context")
    assert table.loc["none", "val_crossfit_auprc"] == pytest.approx(
        average_precision_score(val["target"], val["probability"]))


def test_validation_halves_alternate_each_folds_patients_and_skip_an_empty_half():
    val = pd.DataFrame({"fold": [0, 0, 0, 0, 1], "patient": ["c", "a", "b", "a", "d"]})
    halves = [(val["patient"][scored].tolist(), val["patient"][tuned_on].tolist())
              for scored, tuned_on in validation_halves(val)]
    assert halves == [(["c", "a", "a"], ["b"]), (["b"], ["c", "a", "a"]), (["d"], [])]


def test_a_context_of_several_steps_tunes_each_weight_on_the_previous_steps_blend():
    twice = {"radius 1 twice": (radius_neighbours(1), radius_neighbours(1))}
    (row,) = context_rules(slide("v", 0), slide("o", 0), ("max_f1", {}), contexts=twice).to_dict("records")
    # step 1 at 0.5 (as above) leaves IDC at 0.5 and tissue at 0.45, already ranked perfectly: step 2 keeps 0
    assert (row["weight_mean"], row["weight_mean_2"]) == (0.5, 0.0)
    assert [row[k] for k in ("auroc", "f1", "balanced_accuracy")] == [1.0, 1.0, 1.0]
    val = pd.concat([slide("a", 0), slide("b", 0).assign(target=0)])
    assert cross_fitted(val, "probability", twice["radius 1 twice"]).tolist() == pytest.approx(
        cross_fitted(val, "probability", (radius_neighbours(1),)).tolist())  # b's weights: 0.5 then 0


def test_every_step_of_a_context_is_applied_to_the_blend_of_the_steps_before():
    row = pd.DataFrame({"patient": "a", "x": [0, 50, 100], "y": 0})
    # step 1 at 0.5: [0, 0.25, 0.5]; step 2 at 0.5 on that: [0.125, 0.25, 0.375]
    assert blend_at(row, np.array([0.0, 0.0, 1.0]), (radius_neighbours(1),) * 2, [0.5, 0.5]).tolist() == [
        0.125, 0.25, 0.375]


def test_context_rules_read_the_patches_own_probabilities_when_the_run_had_context():
    val, oof = slide("v", 0), slide("o", 0)
    val["patch_probability"], oof["patch_probability"] = val["probability"], oof["probability"]
    val["probability"] = oof["probability"] = 0.5  # already blended: must not be blended again
    assert context_rules(val, oof, ("max_f1", {})).set_index("context").loc["radius 1", "f1"] == 1.0


def test_the_ensembles_thresholds_are_tuned_on_every_folds_validation_at_the_ensembles_weight():
    val = pd.concat([slide("v", 0), slide("w", 1)])
    val["patch_probability"] = val["probability"]
    # at weight 0.5 every fold's IDC patches score 0.5 and the others 0.45 (max-F1 at 0.5); alone max-F1 is 0.9
    assert ensemble_operating_point(val, ("max_f1", {}), radius=1, weight=0.5) == pytest.approx((0.5, 0.9))


def test_context_rules_give_no_validation_evidence_on_a_single_class_validation():
    table = context_rules(slide("v", 0).assign(target=0), slide("o", 0), ("max_f1", {}))
    assert table["val_crossfit_auprc"].isna().all() and table["val_crossfit_auroc"].isna().all()


def test_patient_table_ranks_patients_by_their_misclassified_patches():
    oof = pd.DataFrame({"patient": ["a", "a", "a", "b", "b", "c"], "fold": [0, 0, 0, 1, 1, 1],
                        "target": [1, 1, 0, 1, 0, 0], "probability": [0.2, 0.9, 0.3, 0.8, 0.6, 0.4],
                        "threshold": [0.5, 0.5, 0.5, 0.7, 0.7, 0.7]})
    table = patient_table(oof)
    assert table["patient"].tolist() == ["a", "b", "c"]  # a: one FN; b, c: none (0.6 < 0.7)
    a = table.iloc[0]
    assert (a["patches"], a["errors"], a["false_negatives"], a["false_positives"]) == (3, 1, 1, 0)
    assert a["idc_share"] == pytest.approx(2 / 3) and a["mean_probability"] == pytest.approx(1.4 / 3)
    assert a["auroc"] == pytest.approx(0.5)  # positives 0.2 and 0.9 against the negative 0.3
    assert np.isnan(table.iloc[2]["auroc"])  # one class


def summary_of(client: MlflowClient, run_id: str) -> dict:
    """A run's logged data summary (patients per split, the split's notes)."""
    return json.loads(Path(client.download_artifacts(run_id, "data/summary.json")).read_text())


@pytest.mark.slow
def test_a_cross_validation_ensemble_is_evaluated_on_its_held_out_test_patients(make_cfg):
    """The fold ensemble records no validation patients of its own (all trained some member): evaluate.py tests
    its recorded test patients all the same, as training did, and names a missing test split in one line. Its
    folds trained on half their training patients (cv.train_patients, a learning curve's point), as recorded."""
    train(make_cfg("cv.folds=2", "cv.train_patients=0.5", "split.train=0.6", "split.val=0.2", "split.test=0.2",
                   "logger.log_model=false"))
    client = MlflowClient(make_cfg().logger.tracking_uri)
    (parent,) = client.search_runs([client.get_experiment_by_name("idc").experiment_id], "tags.cv = 'parent'")
    pool = summary_of(client, parent.info.run_id)["patients"]
    for child in client.search_runs([parent.info.experiment_id], f"tags.mlflow.parentRunId = '{parent.info.run_id}'"):
        fold = summary_of(client, child.info.run_id)
        assert fold["split_notes"]["train_patients"] == 0.5
        unthinned = len(pool["train"]) + len(pool["val"]) - len(fold["patients"]["test"]) - len(fold["patients"]["val"])
        assert len(fold["patients"]["train"]) == max(1, int(unthinned * 0.5 + 0.5)) < unthinned
    evaluate(make_cfg(f"ckpt_path={parent.data.tags['best_checkpoint']}", config_name="evaluate"))
    (evaluation,) = client.search_runs([client.get_experiment_by_name("idc-eval").experiment_id])
    for name in ("test_auroc", "test_f1", "test_tp", "test_fn"):
        assert evaluation.data.metrics[name] == pytest.approx(parent.data.metrics[name]), name


@pytest.mark.slow
def test_cross_validation_runs_folds_as_children_and_saves_an_ensemble(make_cfg, tmp_path, monkeypatch):
    cfg = make_cfg("cv.folds=3", "cv.val=next_fold", "split.train=0.8", "split.val=0.2", "split.test=0",
                   "logger.log_model=true",
                   "report.bootstrap_resamples=20", "threshold=sensitivity", "threshold.target_sensitivity=0.8")
    states = []  # each fold's weights, dropout and augmentation draw from the run's seed, not from where the
    # previous fold left the generators: a resumed cross-validation trains its next fold as an unbroken one would

    def recording(*args, **kwargs):
        states.append(torch.get_rng_state())
        return fit_and_test(*args, **kwargs)

    monkeypatch.setattr("idclab.training.crossval.fit_and_test", recording)
    score = train(cfg)
    assert len(states) == 3 and all(torch.equal(state, states[0]) for state in states)
    assert 0 <= score <= 1
    client = MlflowClient(cfg.logger.tracking_uri)
    runs = client.search_runs([client.get_experiment_by_name("idc").experiment_id])
    (parent,) = [r for r in runs if r.data.tags.get("cv") == "parent"]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert len(children) == 3 and all(r.info.status == "FINISHED" for r in children)
    assert parent.info.status == "FINISHED" and parent.data.tags["idclab.kind"] == "train"
    oof_patients = sum(int(c.data.metrics["test_tp"] + c.data.metrics["test_fn"] + c.data.metrics["test_tn"]
                           + c.data.metrics["test_fp"]) for c in children)
    metrics = parent.data.metrics
    assert oof_patients == metrics["oof_tp"] + metrics["oof_fn"] + metrics["oof_tn"] + metrics["oof_fp"]
    for name in ("oof_f1", "oof_balanced_accuracy", "oof_auroc", "oof_auprc", "oof_f1_ci_low",
                 "cv_test_f1_mean", "cv_test_f1_std", "best_val_auprc", "oof_rule_youden_balanced_accuracy"):
        assert name in metrics, name
    # the configured rule with its own target, re-tuned on the saved validation predictions, labels as training did
    assert metrics["oof_rule_configured_f1"] == pytest.approx(metrics["oof_f1"])
    assert metrics["oof_rule_configured_sensitivity"] == pytest.approx(metrics["oof_sensitivity"])
    assert metrics["oof_rule_configured_threshold_mean"] == pytest.approx(metrics["threshold"])
    assert "oof_rule_sensitivity_f1" in metrics  # the default rules stay beside it
    # spatial context compared on the same models: its "none" row is the configured rule again
    assert metrics["oof_context_none_f1"] == pytest.approx(metrics["oof_f1"])
    assert metrics["oof_context_none_auroc"] == pytest.approx(metrics["oof_auroc"])
    assert {"oof_context_radius_1_auroc", "oof_context_radius_2_weight_mean"} <= set(metrics)
    local = Path(client.download_artifacts(parent.info.run_id, "cv"))
    patients = pd.read_csv(local / "oof_patients.csv")
    assert patients["patches"].sum() == len(pd.read_csv(local / "oof_predictions.csv"))
    assert patients["errors"].sum() == metrics["oof_fp"] + metrics["oof_fn"]
    val = pd.read_csv(local / "val_predictions.csv")
    assert set(val.columns) >= {"fold", "patient", "file", "x", "y", "probability"} and val["fold"].nunique() == 3
    # cv.val=next_fold: each patient validated once, in the fold before its own (the 2-fold runs use a share)
    val_fold = val.groupby("patient")["fold"].agg(["nunique", "first"])
    assert val_fold["nunique"].max() == 1
    own_fold = patients.set_index("patient")["fold"]
    assert (val_fold.loc[own_fold.index, "first"] == (own_fold - 1) % 3).all()
    assert metrics["cv_val_pooled_auroc"] == pytest.approx(roc_auc_score(val["target"], val["probability"]))
    ensemble = load_classifier(parent.data.tags["best_checkpoint"])
    assert isinstance(ensemble, EnsembleClassifier) and len(ensemble.model) == 3
    images = torch.randint(0, 255, (4, 3, 50, 50), dtype=torch.uint8)
    members = torch.stack([torch.sigmoid(m(images)) for m in ensemble.model]).mean(0)
    assert torch.allclose(ensemble.probabilities(images), members, atol=1e-5)
    assert parent.data.tags["model_uri"]
    chosen = f"ckpt_path={parent.data.tags['best_checkpoint']}"
    for split_from in ("recorded", "fresh"):  # refused before any evaluation run: no validation of its own
        with pytest.raises(ConfigError, match="records no validation patients"):
            evaluate(make_cfg(chosen, "tta=true", f"split_from={split_from}", config_name="evaluate"))
    with pytest.raises(ConfigError, match="records no test patients"):  # split.test=0: the estimate is out of fold
        evaluate(make_cfg(chosen, config_name="evaluate"))
    with pytest.raises(RunNotFoundError, match="has no test patients"):  # never the best run to test or register
        evaluate(make_cfg("register.name=cv-model", config_name="evaluate"))
    assert client.search_registered_models() == []


def cut_in_fold(monkeypatch, fold: int, epoch: int) -> None:
    """Raise in fold `fold`'s epoch `epoch` just after its last.ckpt is written (a power cut mid-study)."""
    save = pl.Trainer.save_checkpoint

    def power_cut(self, filepath, *args, **kwargs):
        save(self, filepath, *args, **kwargs)
        path = Path(filepath)
        if path.parts[-3] == f"fold_{fold}" and path.name == "last.ckpt" and self.current_epoch == epoch:
            raise RuntimeError("power cut")

    monkeypatch.setattr(pl.Trainer, "save_checkpoint", power_cut)


def cv_runs(client: MlflowClient) -> tuple[list, dict[str, object]]:
    """The cross-validation parent runs and the fold runs by fold number."""
    runs = client.search_runs([client.get_experiment_by_name("idc").experiment_id])
    parents = [r for r in runs if r.data.tags.get("cv") == "parent"]
    return parents, {r.data.tags["idclab.fold"]: r for r in runs if r.data.tags.get("cv") == "fold"}


@pytest.mark.slow
def test_a_killed_cross_validation_keeps_its_finished_folds_and_resumes_the_cut_one(make_cfg, monkeypatch, tmp_path):
    patches = copy_patches(make_cfg, tmp_path / "patches")
    args = ("data=idc", f"data.root={patches}", "data.batch_size=16", "data.decode_workers=1", *TINY_TRAINER,
            "cv.folds=2", "split.train=0.8", "split.val=0.2", "split.test=0", "trainer.max_epochs=3")
    cut_in_fold(monkeypatch, fold=1, epoch=1)
    with pytest.raises(RuntimeError, match="power cut"):
        train(make_cfg(*args, tiny=False))
    monkeypatch.undo()
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    (parent,), folds = cv_runs(client)
    assert parent.info.status == "FAILED" and [folds[k].info.status for k in "01"] == ["FINISHED", "FAILED"]
    assert parent.data.tags["output_dir"] == str((tmp_path / "out").resolve())  # what resume=RUN_ID reads
    kept_dir = tmp_path / "out" / "fold_0" / "checkpoints"
    stamps = {path.name: path.stat().st_mtime_ns for path in kept_dir.iterdir()}

    client.set_terminated(folds["0"].info.run_id, "KILLED")  # as if cut between its record and its run's close
    later = time.time_ns() + 10**9
    for path in patches.rglob("*.png"):  # the same data, copied afresh in a new session: new file times
        os.utime(path, ns=(later, later))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        train(make_cfg(*args, tiny=False))  # the same command: same output folder, so it continues
    assert not [w for w in caught if "exists and is not empty" in str(w.message)]  # its own checkpoints: no alarm
    assert {path.name: path.stat().st_mtime_ns for path in kept_dir.iterdir()} == stamps  # not trained again
    (resumed,), after = cv_runs(client)
    assert resumed.info.run_id == parent.info.run_id and resumed.info.status == "FINISHED"
    assert {k: r.info.run_id for k, r in after.items()} == {k: r.info.run_id for k, r in folds.items()}
    assert all(r.info.status == "FINISHED" for r in after.values())
    history = client.get_metric_history(after["1"].info.run_id, "val_auprc")
    assert sorted(m.step for m in history) == [0, 1, 2]  # the cut fold continued: each epoch logged once
    # the kept fold's predictions are the ones it made: its own validation file is the parent's fold-0 rows
    own = pd.read_csv(client.download_artifacts(folds["0"].info.run_id, "val/predictions.csv"))
    pooled = pd.read_csv(Path(client.download_artifacts(parent.info.run_id, "cv")) / "val_predictions.csv")
    kept = pooled[pooled["fold"] == 0].drop(columns="fold").reset_index(drop=True)
    pd.testing.assert_frame_equal(kept[own.columns], own, check_dtype=False)
    assert "oof_auroc" in resumed.data.metrics
    clock = [m.value for m in sorted(client.get_metric_history(after["1"].info.run_id, "train_minutes"),
                                     key=lambda m: m.step)]
    assert 0 < clock[0] < clock[1] < clock[2]  # the epochs' time carried over the cut
    minutes = [client.get_run(r.info.run_id).data.metrics["train_minutes"] for r in after.values()]
    assert minutes[0] > 0 and resumed.data.metrics["train_minutes"] == pytest.approx(sum(minutes))
    assert len(load_classifier(resumed.data.tags["best_checkpoint"]).model) == 2


def fold_result(best_path: str | None) -> FitResult:
    rows = np.array([3, 1, 4])
    probs = np.array([0.2, 0.7, 0.9], dtype=np.float32)
    return FitResult(0.81, best_path, 0.4, rows, probs, probs, rows + 10, probs, {"test_f1": 0.5},
                     {"context_weight": 0.3, "context_radius": 1, "patch_threshold": 0.45}, probs, 90.0)


def fold_data(content: str = "abc", test_rows: tuple[int, ...] = (11, 13, 14), cache_key: str = "k1"
              ) -> SimpleNamespace:
    """What a fold record reads of a fold's data: its fingerprint and the rows of its split."""
    rows = {"val": np.array([1, 3, 4]), "test": np.array(test_rows)}
    return SimpleNamespace(split=SimpleNamespace(rows=rows), record=lambda: {
        "data_fingerprint": {"cache_key": cache_key, "content": content, "patches": {"val": 3, "test": 3}}})


def saved_fold(folder: Path, best_path: str | None = "") -> None:
    """A fold of run `run-a` (MLflow run `fold-a`) recorded in `folder`, its checkpoint in the fold's folder."""
    best = folder / "checkpoints" / "best.ckpt"
    best.parent.mkdir(exist_ok=True)
    best.write_bytes(b"weights")
    row = {"fold": 0, "patients": 2, "best_val_score": 0.81, "threshold": 0.4, "test_f1": 0.5}
    save_fold(folder, "run-a", "fold-a", fold_data(), row, fold_result(str(best) if best_path == "" else best_path))


def test_a_fold_record_is_kept_only_for_its_run_its_data_and_its_own_checkpoint(tmp_path):
    saved_fold(tmp_path)
    kept = kept_fold(tmp_path, "run-a", fold_data())
    assert kept.run_id == "fold-a" and kept.row["test_f1"] == 0.5
    result = kept.result
    assert result.best_path == str(tmp_path / "checkpoints" / "best.ckpt") and result.threshold == 0.4
    assert result.best_score == 0.81 and result.train_seconds == 90.0
    assert result.context == {"context_weight": 0.3, "context_radius": 1, "patch_threshold": 0.45}
    np.testing.assert_array_equal(result.test_rows, [13, 11, 14])
    np.testing.assert_array_equal(result.val_patch_probs, np.array([0.2, 0.7, 0.9], dtype=np.float32))
    assert kept_fold(tmp_path, "run-b", fold_data()) is None  # another run's fold
    assert kept_fold(tmp_path, "run-a", fold_data(content="xyz")) is None  # the data changed
    assert kept_fold(tmp_path, "run-a", fold_data(cache_key="k2")).run_id == "fold-a"  # the same data, new file times
    record = json.loads((tmp_path / RECORD).read_text())
    del record["data_fingerprint"]["content"]  # a record written before content digests: its cache key tells
    (tmp_path / RECORD).write_text(json.dumps(record))
    assert kept_fold(tmp_path, "run-a", fold_data(content="any")).run_id == "fold-a"
    assert kept_fold(tmp_path, "run-a", fold_data(cache_key="k2")) is None
    saved_fold(tmp_path)
    assert kept_fold(tmp_path, "run-a", fold_data(test_rows=(11, 13, 15))) is None  # other out-of-fold patches
    assert kept_fold(tmp_path, "run-a", fold_data(test_rows=(9, 11, 13, 14))).run_id == "fold-a"  # a limited test
    elsewhere = tmp_path / "best.ckpt"
    elsewhere.write_bytes(b"weights")
    saved_fold(tmp_path, str(elsewhere))
    assert kept_fold(tmp_path, "run-a", fold_data()) is None  # a checkpoint outside the fold's folder
    saved_fold(tmp_path, None)
    assert kept_fold(tmp_path, "run-a", fold_data()) is None  # no checkpoint (fast_dev_run): trained again


@pytest.mark.parametrize("damage", ["object array", "float rows", "repeated rows", "short probabilities",
                                    "empty arrays file",
                                    "cut arrays file", "no arrays file", "not a record", "record without keys"])
def test_a_fold_record_is_read_as_data_and_a_damaged_one_is_not_kept(tmp_path, damage):
    saved_fold(tmp_path)
    arrays, path = dict(np.load(tmp_path / ARRAYS)), tmp_path / ARRAYS
    if damage == "object array":  # never unpickled
        np.savez(path, **arrays | {"test_probs": np.array([object()] * 3, dtype=object)})
    elif damage == "float rows":
        np.savez(path, **arrays | {"test_rows": arrays["test_rows"].astype(float)})
    elif damage == "repeated rows":
        np.savez(path, **arrays | {"val_rows": np.array([1, 1, 3])})
    elif damage == "short probabilities":
        np.savez(path, **arrays | {"val_probs": arrays["val_probs"][:2]})
    elif damage == "empty arrays file":
        path.write_bytes(b"")
    elif damage == "cut arrays file":  # a power cut before the bytes reached the disk
        path.write_bytes(path.read_bytes()[:200])
    elif damage == "no arrays file":
        path.unlink()
    elif damage == "not a record":
        (tmp_path / RECORD).write_text("[1, 2]")
    else:
        (tmp_path / RECORD).write_text('{"parent_run_id": "run-a"}')
    assert kept_fold(tmp_path, "run-a", fold_data()) is None


def test_a_cross_validation_resumes_from_its_newest_fold_checkpoint(tmp_path):
    write_state(tmp_path, "cv-run", {"seed": 1}, None)
    start = (tmp_path / STATE_FILE).stat().st_mtime_ns
    for fold, age in ((0, 2), (1, 3), (2, 1)):
        last = tmp_path / f"fold_{fold}" / LAST_CHECKPOINT
        last.parent.mkdir(parents=True)
        last.write_bytes(b"epoch")
        os.utime(last, ns=(start + age, start + age))
    assert last_checkpoint(tmp_path) == tmp_path / "fold_1" / LAST_CHECKPOINT
    member = tmp_path / "fold_2" / "member_0" / LAST_CHECKPOINT
    member.parent.mkdir(parents=True)
    member.write_bytes(b"epoch")
    os.utime(member, ns=(start + 5, start + 5))
    assert last_checkpoint(tmp_path) == member


def test_a_folds_run_is_resumed_through_its_cross_validation(tmp_path):
    fold_dir = tmp_path / "fold_1"
    write_state(fold_dir, "fold-run", {"seed": 1}, None)
    last = fold_dir / LAST_CHECKPOINT
    last.parent.mkdir()
    last.write_bytes(b"epoch")
    tags = {"idclab.kind": "cv_fold", "mlflow.parentRunId": "cv-run", "output_dir": str(fold_dir)}

    def lookup(run_id):
        return "KILLED", tags

    message = "run fold-run is a fold of cross-validation run cv-run: resume that one"
    with pytest.raises(ResumeError, match=message):  # the same command pointed at the fold's folder
        find_resume_point(fold_dir, None, lookup)
    with pytest.raises(ResumeError, match="resume=cv-run"):
        find_resume_point(tmp_path / "elsewhere", "fold-run", lookup)
    assert find_resume_point(fold_dir, None, lookup, parent_run_id="cv-run").run_id == "fold-run"  # by its own
    assert find_resume_point(fold_dir, None, lookup, parent_run_id="cv-other") is None  # not another's child
    tags["idclab.kind"] = "train"  # a run of its own resumes
    assert find_resume_point(fold_dir, None, lookup).run_id == "fold-run"

