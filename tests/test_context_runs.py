"""Spatial context end to end: tuned on validation, stored in the checkpoint, applied at test, evaluate and predict."""

from __future__ import annotations

import csv
import shutil

import mlflow.pyfunc
import numpy as np
import pytest
from mlflow.tracking import MlflowClient
from PIL import Image

from idclab.config.build import load_classifier
from idclab.data.datamodule import resolve_root
from idclab.evaluation.evaluate import evaluate
from idclab.scoring.context import WEIGHTS, neighbour_matrix, smooth
from idclab.training.pipeline import train

FULL_SPLITS = ["trainer.limit_val_batches=1.0", "trainer.limit_test_batches=1.0"]  # whole slides: real neighbours


def only_run(cfg):
    client = MlflowClient(cfg.logger.tracking_uri)
    (run,) = client.search_runs([client.get_experiment_by_name("idc").experiment_id])
    return client, run


@pytest.mark.slow
def test_context_is_stored_with_the_model_and_applied_the_same_at_evaluate_and_predict(make_cfg, tmp_path):
    cfg = make_cfg("context=neighbours", "context.weight=0.5", "context.radius=2", "logger.log_model=true",
                   *FULL_SPLITS)
    train(cfg)
    client, run = only_run(cfg)
    metrics = run.data.metrics
    assert metrics["context_weight"] == 0.5 and 0 <= metrics["patch_threshold"] <= 1
    assert run.data.params["context"] == "neighbours"
    assert metrics["test_auroc"] != metrics["test_without_context_auroc"]  # the option changed the scores
    checkpoint = run.data.tags["best_checkpoint"]
    classifier = load_classifier(checkpoint)
    assert (classifier.context_weight, classifier.context_radius) == (0.5, 2)
    assert classifier.patch_threshold == pytest.approx(metrics["patch_threshold"])

    evaluated = evaluate(make_cfg(f"ckpt_path={checkpoint}", config_name="evaluate"))
    for name in ("test_auroc", "test_f1", "test_balanced_accuracy", "test_without_context_auroc"):
        assert evaluated[name] == pytest.approx(metrics[name], abs=1e-6), name

    patient = sorted(classifier.hparams["split_patients"]["test"])[0]
    slide = resolve_root(cfg.data) / patient  # this run's data set (other synthetic sets share patient names)
    folder = tmp_path / "slide"
    shutil.copytree(slide, folder)
    evaluate(make_cfg(f"ckpt_path={checkpoint}", f"predict={folder}", config_name="evaluate"))
    with open(tmp_path / "out" / "predictions.csv") as handle:
        rows = list(csv.DictReader(handle))
    alone = np.array([float(r["patch_probability"]) for r in rows])
    where = [np.array([r["patient"] for r in rows]), np.array([int(r["x"]) for r in rows]),
             np.array([int(r["y"]) for r in rows])]
    blended = np.array([float(r["probability"]) for r in rows])
    assert blended == pytest.approx(smooth(alone, neighbour_matrix(*where, radius=2), 0.5), abs=1e-5)
    assert not np.allclose(blended, smooth(alone, neighbour_matrix(*where, radius=1), 0.5))  # the radius counts
    assert not np.allclose(blended, alone)
    assert [int(r["label"]) for r in rows] == (blended >= classifier.threshold).astype(int).tolist()

    mlflow.set_tracking_uri(cfg.logger.tracking_uri)
    served = mlflow.pyfunc.load_model(run.data.tags["model_uri"])  # the served model, given the same positions
    patches = np.stack([np.asarray(Image.open(r["file"]).convert("RGB")) for r in rows])
    positions = {"patient": [r["patient"] for r in rows], "x": [int(r["x"]) for r in rows],
                 "y": [int(r["y"]) for r in rows]}
    output = served.predict(patches, params=positions)
    assert output["probability"].to_numpy() == pytest.approx(blended, abs=1e-5)
    assert output["label"].tolist() == [int(r["label"]) for r in rows]
    assert output["patch_probability"].to_numpy() == pytest.approx(alone, abs=1e-5)
    assert output["in_context"].all()


@pytest.mark.slow
def test_a_null_weight_is_tuned_on_validation(make_cfg):
    cfg = make_cfg("context=neighbours", *FULL_SPLITS)
    train(cfg)
    _, run = only_run(cfg)
    assert run.data.metrics["context_weight"] in WEIGHTS
    assert run.data.params["context.weight"] == "None"


@pytest.mark.slow
def test_cross_validation_reports_oof_with_and_without_context_and_the_ensemble_keeps_it(make_cfg):
    cfg = make_cfg("cv.folds=2", "split.train=0.8", "split.val=0.2", "split.test=0", "context=neighbours",
                   "context.weight=0.5", "report.bootstrap_resamples=20", *FULL_SPLITS)
    train(cfg)
    client = MlflowClient(cfg.logger.tracking_uri)
    runs = client.search_runs([client.get_experiment_by_name("idc").experiment_id], "tags.cv = 'parent'")
    metrics = runs[0].data.metrics
    assert metrics["context_weight"] == 0.5
    assert metrics["oof_auroc"] != metrics["oof_without_context_auroc"]
    ensemble = load_classifier(runs[0].data.tags["best_checkpoint"])
    assert ensemble.context_weight == 0.5 and ensemble.uses_context
