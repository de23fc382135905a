"""evaluate.py: best-run selection, explicit checkpoints, evaluation runs and prediction."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from PIL import Image

from idclab.evaluation import evaluate
from idclab.training import train


@pytest.fixture
def trained(make_cfg):
    """Two training runs (ann, cnn) in one temporary store."""
    configs = [make_cfg("model=ann"), make_cfg("model=cnn")]
    for cfg in configs:
        train(cfg)
    return configs[0]


def eval_cfg(make_cfg, *overrides: str):
    return make_cfg(*overrides, config_name="evaluate")


def test_evaluate_picks_the_best_run_and_logs_a_linked_evaluation_run(make_cfg, trained):
    client = MlflowClient(trained.logger.tracking_uri)
    experiment = client.get_experiment_by_name(trained.logger.experiment_name)
    training_runs = client.search_runs([experiment.experiment_id], "tags.`idclab.kind` = 'train'")
    best = max(training_runs, key=lambda r: r.data.metrics["best_val_auprc"])
    results = evaluate(eval_cfg(make_cfg))
    assert 0 <= results["test_f1"] <= 1
    (evaluation,) = client.search_runs([experiment.experiment_id], "tags.`idclab.kind` = 'evaluate'")
    assert evaluation.info.status == "FINISHED"
    assert evaluation.data.tags["idclab.source_run_id"] == best.info.run_id
    assert evaluation.data.metrics["test_f1"] == pytest.approx(results["test_f1"])
    # the same weights on the same test split give the training run's test metrics
    assert evaluation.data.metrics["test_auroc"] == pytest.approx(best.data.metrics["test_auroc"], abs=1e-6)
    listed = {a.path for a in client.list_artifacts(evaluation.info.run_id, "test")}
    assert "test/classification_report.json" in listed and "test/pr_curve.png" in listed


def test_evaluate_selects_by_another_metric_and_downloads_a_missing_checkpoint(make_cfg, trained):
    client = MlflowClient(trained.logger.tracking_uri)
    experiment = client.get_experiment_by_name(trained.logger.experiment_name)
    runs = client.search_runs([experiment.experiment_id], "tags.`idclab.kind` = 'train'")
    worst = min(runs, key=lambda r: r.data.metrics["val_loss"])
    Path(worst.data.tags["best_checkpoint"]).unlink()  # only the MLflow artifact is left
    evaluate(eval_cfg(make_cfg, "select.metric=val_loss", "select.mode=min"))
    (evaluation,) = client.search_runs([experiment.experiment_id], "tags.`idclab.kind` = 'evaluate'")
    assert evaluation.data.tags["idclab.source_run_id"] == worst.info.run_id
    assert "downloaded" in evaluation.data.tags["checkpoint"]


def test_evaluate_a_given_checkpoint(make_cfg, trained):
    client = MlflowClient(trained.logger.tracking_uri)
    run = client.search_runs([client.get_experiment_by_name("idc").experiment_id])[0]
    results = evaluate(eval_cfg(make_cfg, f"ckpt_path={run.data.tags['best_checkpoint']}"))
    assert "test_balanced_accuracy" in results


def test_evaluate_without_runs_says_to_train_first(make_cfg):
    with pytest.raises(LookupError, match="train first"):
        evaluate(eval_cfg(make_cfg))


def test_predict_files_and_folders_with_per_file_errors(make_cfg, trained, tmp_path, data_dir):
    folder = tmp_path / "to_predict"
    folder.mkdir()
    patches = sorted(data_dir.glob("synthetic/synthetic-*/*/1/*.png"))[:3]
    for patch in patches:
        shutil.copy(patch, folder / patch.name)
    (folder / "notes.png").write_bytes(b"not an image")
    Image.new("RGB", (400, 300), "white").save(folder / "huge.png")
    single = sorted(data_dir.glob("synthetic/synthetic-*/*/0/*.png"))[0]
    out = evaluate(eval_cfg(make_cfg, f"predict=[{folder},{single},{tmp_path / 'missing.png'}]"))
    assert out == {"predicted": 4, "failed": 3}
    with open(Path(tmp_path / "out" / "predictions.csv")) as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 7
    by_name = {Path(r["file"]).name: r for r in rows}
    assert "corrupt" in by_name["notes.png"]["error"]
    assert "oversized" in by_name["huge.png"]["error"]
    assert by_name["missing.png"]["error"] == "no such file"
    good = by_name[patches[0].name]
    assert 0 <= float(good["probability"]) <= 1 and good["label"] in {"0", "1"}
    assert good["patient"] and int(good["x"]) >= 1
    heatmaps = list((tmp_path / "out" / "heatmaps").glob("*.png"))
    assert {h.stem for h in heatmaps} == {r["patient"] for r in rows if r["probability"]}


def test_logged_model_registry_and_evaluation_from_the_registry(make_cfg, tmp_path):
    import numpy as np

    from idclab.build import load_classifier
    from idclab.tracking import download_model_checkpoint, model_source_run, synthetic_example

    cfg = make_cfg("logger.log_model=true")
    train(cfg)
    client = MlflowClient(cfg.logger.tracking_uri)
    (run,) = client.search_runs([client.get_experiment_by_name("idc").experiment_id])
    model_uri = run.data.tags["model_uri"]
    evaluate(eval_cfg(make_cfg, "register.name=idc-classifier", "register.alias=champion",
                      f"paths.output_dir={tmp_path / 'register'}"))
    version = client.get_model_version_by_alias("idc-classifier", "champion")
    assert version.run_id == run.info.run_id and version.source == model_uri
    checkpoint = download_model_checkpoint(client, "models:/idc-classifier@champion", tmp_path / "dl")
    classifier = load_classifier(checkpoint)
    assert model_source_run(client, "models:/idc-classifier@champion").info.run_id == run.info.run_id
    model_files = {p.name for p in checkpoint.parents[1].rglob("*")}
    assert "python_model.pkl" not in model_files and "pyfunc_model.py" in model_files  # logged from code
    example = json.loads(next(checkpoint.parents[1].rglob("input_example.json")).read_text())
    assert np.array_equal(np.asarray(example), synthetic_example())  # no patient pixels
    assert classifier.threshold == pytest.approx(run.data.metrics["threshold"])  # the tuned threshold travels
    import mlflow.pyfunc

    mlflow.set_tracking_uri(cfg.logger.tracking_uri)
    model = mlflow.pyfunc.load_model("models:/idc-classifier@champion")
    assert model.metadata.signature is not None
    patches = np.random.default_rng(0).integers(0, 255, (3, 50, 50, 3), dtype=np.uint8)
    output = model.predict(patches)
    assert list(output.columns) == ["probability", "label"] and len(output) == 3
    results = evaluate(eval_cfg(make_cfg, "model_uri=models:/idc-classifier@champion",
                                f"paths.output_dir={tmp_path / 'from_registry'}"))
    assert results["test_auroc"] == pytest.approx(run.data.metrics["test_auroc"], abs=1e-6)


def test_register_needs_a_selected_run(make_cfg, trained):
    client = MlflowClient(trained.logger.tracking_uri)
    run = client.search_runs([client.get_experiment_by_name("idc").experiment_id])[0]
    with pytest.raises(LookupError, match="no logged model"):
        evaluate(eval_cfg(make_cfg, "register.name=x"))
    with pytest.raises(LookupError, match="needs a training run"):
        evaluate(eval_cfg(make_cfg, "register.name=x", f"ckpt_path={run.data.tags['best_checkpoint']}"))


def test_report_pictures_are_valid_images(make_cfg, trained, tmp_path):
    evaluate(eval_cfg(make_cfg, f"paths.output_dir={tmp_path / 'pictures'}"))
    folder = tmp_path / "pictures" / "test"
    for name in ("confusion_matrix.png", "roc_curve.png", "pr_curve.png", "calibration.png"):
        with Image.open(folder / name) as image:
            image.verify()
            assert image.size[0] >= 400 and image.size[1] >= 400, name
    for name in ("false_positives.png", "false_negatives.png"):  # a row of up to 8 patches per 16
        with Image.open(folder / name) as image:
            image.verify()
            assert image.size[0] >= 1000 and image.size[1] >= 150, name
    heatmaps = sorted((folder / "heatmaps").glob("*.png"))
    assert 1 <= len(heatmaps) <= 3
    with Image.open(heatmaps[0]) as image:
        assert image.size[0] > 2 * image.size[1] // 2 and image.size[0] >= 800  # four panels side by side
