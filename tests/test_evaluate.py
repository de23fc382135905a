"""evaluate.py: best-run selection, explicit checkpoints, evaluation runs and prediction."""

from __future__ import annotations

import csv
import json
import re
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from conftest import TINY_TRAINER, copy_patches
from mlflow.tracking import MlflowClient
from PIL import Image

import idclab.data.datamodule
import idclab.evaluation.evaluate
from idclab.config.validation import ConfigError
from idclab.data.datamodule import resolve_root
from idclab.data.layout import DataLayoutError
from idclab.data.split import PatientSplit
from idclab.evaluation.evaluate import data_changes, evaluate, evaluation_data, leave_out_fitted_patients
from idclab.training.pipeline import train


@pytest.fixture
def trained(make_cfg, trained_copy):
    """Two training runs (ann, cnn) in this test's own copy of a store trained once a session."""
    return make_cfg("model=ann")


def eval_cfg(make_cfg, *overrides: str):
    return make_cfg(*overrides, config_name="evaluate")


def evaluation_runs(client: MlflowClient, experiment: str = "idc") -> list:
    """The evaluation runs, which go to their own experiment `<experiment>-eval`."""
    return client.search_runs([client.get_experiment_by_name(f"{experiment}-eval").experiment_id],
                              "tags.`idclab.kind` = 'evaluate'")


def steps_of_test_metrics(client: MlflowClient, run_id: str) -> set[int]:
    """The steps the test metrics of a run were logged at (from Lightning's test loop and from the report)."""
    return {m.step for key in ("test_f1", "test_loss", "test_mcc", "test_ece", "test_f1_ci_low")
            for m in client.get_metric_history(run_id, key)}


@pytest.mark.slow
def test_evaluate_picks_the_best_run_and_logs_a_linked_evaluation_run(make_cfg, trained):
    client = MlflowClient(trained.logger.tracking_uri)
    experiment = client.get_experiment_by_name(trained.logger.experiment_name)
    training_runs = client.search_runs([experiment.experiment_id], "tags.`idclab.kind` = 'train'")
    best = max(training_runs, key=lambda r: r.data.metrics["best_val_auprc"])
    results = evaluate(eval_cfg(make_cfg))
    assert 0 <= results["test_f1"] <= 1
    assert not client.search_runs([experiment.experiment_id], "tags.`idclab.kind` = 'evaluate'")
    (evaluation,) = evaluation_runs(client)
    assert evaluation.info.status == "FINISHED"
    assert evaluation.info.run_name == f"eval {best.info.run_name}"
    assert evaluation.data.tags["idclab.source_run_id"] == best.info.run_id
    for run_id in (evaluation.info.run_id, best.info.run_id):  # every test metric at one step
        assert len(steps_of_test_metrics(client, run_id)) == 1, run_id
    assert evaluation.data.metrics["test_f1"] == pytest.approx(results["test_f1"])
    # the same weights on the same test split give the training run's test metrics
    assert evaluation.data.metrics["test_auroc"] == pytest.approx(best.data.metrics["test_auroc"], abs=1e-6)
    listed = {a.path for a in client.list_artifacts(evaluation.info.run_id, "test")}
    assert "test/classification_report.json" in listed and "test/pr_curve.png" in listed


@pytest.mark.slow
def test_evaluate_loads_the_checkpoint_a_run_logged_not_a_file_its_tag_now_names(make_cfg, trained):
    """Tags on a shared server can be changed after the run: the `best_checkpoint` tag pointed at another run's
    file must not be evaluated (and recorded) as this run's model."""
    client = MlflowClient(trained.logger.tracking_uri)
    experiment = client.get_experiment_by_name(trained.logger.experiment_name)
    best, other = sorted(client.search_runs([experiment.experiment_id], "tags.`idclab.kind` = 'train'"),
                         key=lambda r: -r.data.metrics["best_val_auprc"])
    client.set_tag(best.info.run_id, "best_checkpoint", other.data.tags["best_checkpoint"])
    results = evaluate(eval_cfg(make_cfg))
    assert results["test_auroc"] == pytest.approx(best.data.metrics["test_auroc"], abs=1e-6)
    assert results["test_auroc"] != pytest.approx(other.data.metrics["test_auroc"], abs=1e-6)


@pytest.mark.slow
def test_evaluate_selects_by_another_metric_and_downloads_a_missing_checkpoint(make_cfg, trained):
    client = MlflowClient(trained.logger.tracking_uri)
    experiment = client.get_experiment_by_name(trained.logger.experiment_name)
    runs = client.search_runs([experiment.experiment_id], "tags.`idclab.kind` = 'train'")
    worst = min(runs, key=lambda r: r.data.metrics["val_loss"])
    Path(worst.data.tags["best_checkpoint"]).unlink()  # only the MLflow artifact is left
    evaluate(eval_cfg(make_cfg, "select.metric=val_loss", "select.mode=min"))
    (evaluation,) = evaluation_runs(client)
    assert evaluation.data.tags["idclab.source_run_id"] == worst.info.run_id
    assert "downloaded" in evaluation.data.tags["checkpoint"]


@pytest.mark.slow
def test_evaluate_a_given_checkpoint(make_cfg, trained):
    client = MlflowClient(trained.logger.tracking_uri)
    run = client.search_runs([client.get_experiment_by_name("idc").experiment_id])[0]
    results = evaluate(eval_cfg(make_cfg, f"ckpt_path={run.data.tags['best_checkpoint']}"))
    assert "test_balanced_accuracy" in results
    (evaluation,) = evaluation_runs(client)
    assert evaluation.info.run_name == f"eval {run.data.tags['best_checkpoint']}"


@pytest.mark.slow
def test_a_checkpoint_cannot_choose_where_evaluation_writes_or_how_many_processes_it_starts(make_cfg, trained,
                                                                                             tmp_path, monkeypatch):
    """A synthetic-trained model's data are regenerated under the evaluating project's own folder, whatever folder
    the checkpoint's config names; worker counts and the batch size come from the evaluate config too."""
    client = MlflowClient(trained.logger.tracking_uri)
    run = client.search_runs([client.get_experiment_by_name("idc").experiment_id])[0]
    checkpoint = torch.load(run.data.tags["best_checkpoint"], weights_only=True)
    victim = tmp_path / "someone-elses-folder"
    checkpoint["hyper_parameters"]["config"]["data"] |= {"generated_dir": str(victim), "num_workers": 3,
                                                          "decode_workers": 64}
    torch.save(checkpoint, tmp_path / "shared.ckpt")
    regenerated = tmp_path / "ours"
    started = {}
    module, build = idclab.evaluation.evaluate.PatchDataModule, idclab.data.datamodule.load_or_build

    def data_module(data, batch_size, num_workers, **options):
        started["loader"] = (batch_size, num_workers)
        return module(data, batch_size, num_workers, **options)

    def cache(index, cache_dir, decode_workers):
        started["decoder"] = decode_workers
        return build(index, cache_dir, decode_workers)

    monkeypatch.setattr(idclab.evaluation.evaluate, "PatchDataModule", data_module)
    monkeypatch.setattr(idclab.data.datamodule, "load_or_build", cache)
    results = evaluate(eval_cfg(make_cfg, f"ckpt_path={tmp_path / 'shared.ckpt'}", "data.decode_workers=1",
                                "batch_size=7",
                                f"data.generated_dir={regenerated}", f"paths.output_dir={tmp_path / 'out'}"))
    assert "test_auroc" in results and not victim.exists() and any(regenerated.rglob("*.png"))
    assert started == {"loader": (7, 0), "decoder": 1}  # the evaluate config's, not the checkpoint's 3 and 64


@pytest.mark.slow
def test_evaluate_without_runs_says_to_train_first(make_cfg):
    with pytest.raises(LookupError, match="train first"):
        evaluate(eval_cfg(make_cfg))


@pytest.mark.slow
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
    client = MlflowClient(trained.logger.tracking_uri)
    best = max(client.search_runs([client.get_experiment_by_name("idc").experiment_id]),
               key=lambda r: r.data.metrics["best_val_auprc"])
    assert out == {"predicted": 4, "failed": 3, "threshold": pytest.approx(best.data.metrics["threshold"])}
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
    predicted = [r["patient"] for r in rows if r["probability"]]  # a heatmap for each slide of 2 patches or more
    assert {h.stem for h in heatmaps} == {p for p in predicted if predicted.count(p) >= 2}
    # nothing predictable at all is a failure the user can fix: one line, and the CSV of errors is still written
    (tmp_path / "empty").mkdir()
    for inputs, message in [(f"[{tmp_path / 'missing.png'},{folder / 'notes.png'}]", "none of the 2 files"),
                            (f"[{tmp_path / 'empty'},{tmp_path / 'missing.png'}]", "no file to predict")]:
        with pytest.raises(ConfigError, match=message) as error:
            evaluate(eval_cfg(make_cfg, f"predict={inputs}", f"paths.output_dir={tmp_path / 'nothing'}"))
        assert "\n" not in str(error.value)


@pytest.mark.slow
def test_logged_model_registry_and_evaluation_from_the_registry(make_cfg, tmp_path, monkeypatch):
    import numpy as np

    import idclab.evaluation.evaluate
    from idclab.config.build import load_classifier
    from idclab.tracking.runs import fetch_model, synthetic_example

    cfg = make_cfg("logger.log_model=true")
    train(cfg)
    client = MlflowClient(cfg.logger.tracking_uri)
    (run,) = client.search_runs([client.get_experiment_by_name("idc").experiment_id])
    model_uri = run.data.tags["model_uri"]

    def power_cut(*args, **kwargs):
        raise RuntimeError("power cut")

    monkeypatch.setattr(idclab.evaluation.evaluate, "test_and_report", power_cut)
    with pytest.raises(RuntimeError, match="power cut"):  # a model whose test did not finish is not registered
        evaluate(eval_cfg(make_cfg, "register.name=idc-classifier", f"paths.output_dir={tmp_path / 'cut'}"))
    monkeypatch.undo()
    assert client.search_registered_models() == []
    (cut,) = evaluation_runs(client)
    assert cut.info.status == "FAILED"
    client.delete_run(cut.info.run_id)
    evaluate(eval_cfg(make_cfg, "register.name=idc-classifier", "register.alias=staging",
                      f"paths.output_dir={tmp_path / 'register'}"))
    version = client.get_model_version_by_alias("idc-classifier", "staging")
    assert version.run_id == run.info.run_id and version.source == model_uri
    (registered,) = evaluation_runs(client)
    assert registered.info.run_name == f"register idc-classifier v{version.version}"
    _, logged_by = fetch_model(client, model_uri, tmp_path / "logged")  # the logged model, as training printed it
    assert logged_by.info.run_id == run.info.run_id
    checkpoint, source_run = fetch_model(client, "models:/idc-classifier@staging", tmp_path / "dl")
    classifier = load_classifier(checkpoint)
    assert source_run.info.run_id == run.info.run_id
    model_files = {p.name for p in checkpoint.parents[1].rglob("*")}
    assert "python_model.pkl" not in model_files and "pyfunc_model.py" in model_files  # logged from code
    example = json.loads(next(checkpoint.parents[1].rglob("input_example.json")).read_text())
    assert np.array_equal(np.asarray(example), synthetic_example())  # no patient pixels
    assert classifier.threshold == pytest.approx(run.data.metrics["threshold"])  # the tuned threshold travels
    import mlflow.pyfunc

    mlflow.set_tracking_uri(cfg.logger.tracking_uri)
    model = mlflow.pyfunc.load_model("models:/idc-classifier@staging")
    assert model.metadata.signature is not None
    patches = np.random.default_rng(0).integers(0, 255, (3, 50, 50, 3), dtype=np.uint8)
    output = model.predict(patches)
    assert list(output.columns) == ["probability", "label", "patch_probability", "in_context"] and len(output) == 3
    placed = model.predict(patches, params={"patient": ["p"] * 3, "x": [0, 50, 100], "y": [0, 0, 0]})
    assert placed["probability"].tolist() == output["probability"].tolist()  # trained without context
    assert not placed["in_context"].any()
    results = evaluate(eval_cfg(make_cfg, "model_uri=models:/idc-classifier@staging",
                                f"paths.output_dir={tmp_path / 'from_registry'}"))
    assert results["test_auroc"] == pytest.approx(run.data.metrics["test_auroc"], abs=1e-6)
    names = {r.info.run_name for r in evaluation_runs(client)}
    assert names == {f"register idc-classifier v{version.version}", "eval models:/idc-classifier@staging"}
    assert {r.data.tags["idclab.source_run_id"] for r in evaluation_runs(client)} == {run.info.run_id}


@pytest.mark.slow
def test_register_needs_a_selected_run(make_cfg, trained):
    client = MlflowClient(trained.logger.tracking_uri)
    run = client.search_runs([client.get_experiment_by_name("idc").experiment_id])[0]
    with pytest.raises(LookupError, match="no logged model"):
        evaluate(eval_cfg(make_cfg, "register.name=x"))
    assert client.get_experiment_by_name("idc-eval") is None or not evaluation_runs(client)  # refused before a run
    with pytest.raises(LookupError, match="needs a training run"):
        evaluate(eval_cfg(make_cfg, "register.name=x", f"ckpt_path={run.data.tags['best_checkpoint']}"))


@pytest.mark.slow
def test_files_to_predict_are_checked_before_the_data_is_prepared(make_cfg, trained, monkeypatch, tmp_path):
    """With tta=true the validation patients are prepared to re-tune the threshold: a list naming no file to predict
    is refused first."""
    import idclab.evaluation.evaluate

    monkeypatch.setattr(idclab.evaluation.evaluate, "evaluation_data", lambda *a, **k: pytest.fail("data prepared"))
    with pytest.raises(ConfigError, match="no file to predict"):
        evaluate(eval_cfg(make_cfg, "tta=true", f"predict=[{tmp_path / 'none.png'}]"))


@pytest.mark.slow
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


def add_patient(root: Path, like: str, name: str) -> None:
    """A new patient: a copy of patient `like`'s patches under the id `name`."""
    for path in (root / like).rglob("*.png"):
        target = root / name / path.parent.name / path.name.replace(f"{like}_", f"{name}_", 1)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, target)


def train_on_copied_patches(make_cfg, tmp_path: Path):
    """Train on a real-layout copy of the synthetic patches; the copy's root and the run config."""
    root = copy_patches(make_cfg, tmp_path / "patches")
    cfg = make_cfg("data=idc", f"data.root={root}", "data.batch_size=16", "data.decode_workers=1", *TINY_TRAINER,
                   tiny=False)
    train(cfg)
    return root, cfg


def logged_json(client: MlflowClient, run_id: str, path: str) -> dict:
    return json.loads(Path(client.download_artifacts(run_id, path)).read_text())


@pytest.mark.slow
def test_evaluate_tests_the_recorded_patients_after_the_data_changed(make_cfg, tmp_path):
    root, cfg = train_on_copied_patches(make_cfg, tmp_path)
    client = MlflowClient(cfg.logger.tracking_uri)
    (run,) = client.search_runs([client.get_experiment_by_name("idc").experiment_id])
    trained = logged_json(client, run.info.run_id, "data/summary.json")
    saved = torch.load(run.data.tags["best_checkpoint"], weights_only=True)["hyper_parameters"]
    assert saved["split_patients"] == trained["patients"]  # the exact lists travel with the weights
    assert saved["data_fingerprint"]["cache_key"] == trained["cache_key"]
    counts = {split: sum(c.values()) for split, c in trained["split_counts"].items()}
    assert saved["data_fingerprint"]["patches"] == counts
    # after training, a new patient arrives and a file of a training patient is corrupted
    add_patient(root, trained["patients"]["train"][0], "99999")
    next((root / trained["patients"]["train"][1]).rglob("*.png")).write_bytes(b"no longer a PNG")
    evaluate(eval_cfg(make_cfg, f"paths.output_dir={tmp_path / 'changed'}"))
    (evaluation,) = evaluation_runs(client)
    tested = logged_json(client, evaluation.info.run_id, "data/summary.json")
    assert tested["cache_key"] != trained["cache_key"]  # the data did change...
    assert tested["patients"]["test"] == trained["patients"]["test"]  # ...but the same patients are tested
    assert tested["split_counts"]["test"] == trained["split_counts"]["test"]
    assert tested["split_notes"]["new_patients"] == ["99999"]
    assert len(np.load(tmp_path / "changed" / "test" / "predictions.npz")["probs"]) == counts["test"]
    assert (tmp_path / "data" / "cache").is_dir()  # the cache of the evaluating project, not the training one's
    # a test patient removed: one line naming it (and the new patient); a fresh split must be asked for
    missing = trained["patients"]["test"][0]
    shutil.rmtree(root / missing)
    with pytest.raises(DataLayoutError, match=rf"recorded test patients {missing}\b.*new patients: 99999") as error:
        evaluate(eval_cfg(make_cfg, f"paths.output_dir={tmp_path / 'missing'}"))
    assert "split_from=fresh" in str(error.value) and "\n" not in str(error.value)
    # the fresh split reshuffles the patients: its one test patient is one the model trained on, so it is refused
    with pytest.raises(DataLayoutError, match="every test patient of the fresh split was one this model") as error:
        evaluate(eval_cfg(make_cfg, "split_from=fresh", f"paths.output_dir={tmp_path / 'fresh'}"))
    (fitted,) = re.search(r"\((\d+)\)", str(error.value)).groups()
    assert fitted in trained["patients"]["train"] + trained["patients"]["val"] and "\n" not in str(error.value)


def test_the_data_counts_as_changed_when_its_content_changed_not_its_files_times(capsys):
    def changes(recorded: dict) -> dict:
        data = SimpleNamespace(split=SimpleNamespace(notes={}), record=lambda: {"data_fingerprint": {
            "cache_key": "k2", "content": "c1", "patches": {"test": 5}}})
        return data_changes(SimpleNamespace(hparams={"data_fingerprint": recorded}), data)

    logged = changes({"cache_key": "k1", "content": "c1", "patches": {"test": 5}})  # a fresh copy of the same data
    assert "changed" not in capsys.readouterr().out
    assert logged["data.content"] == logged["data.recorded_content"] == "c1"
    changes({"cache_key": "k1", "content": "c0", "patches": {"test": 5}})
    assert "The data changed since training (content c0 -> c1)" in capsys.readouterr().out
    changes({"cache_key": "k1", "patches": {"test": 5}})  # recorded before contents were: its cache key tells
    assert "The data changed since training (cache k1 -> k2)" in capsys.readouterr().out


def test_a_fresh_split_never_tests_the_patients_a_model_was_fitted_on():
    """split_from=fresh: recorded train and val patients leave the fresh test split, recorded train patients the
    fresh validation split (where TTA re-tunes the threshold); the others stay, and the left-out are named."""
    patients = np.array(["a", "a", "b", "c", "c", "d", "e"])
    split = PatientSplit({"train": ["d", "e"], "val": ["a"], "test": ["b", "c"]},
                         {"train": np.array([5, 6]), "val": np.array([0, 1]), "test": np.array([2, 3, 4])})
    data = SimpleNamespace(index=SimpleNamespace(patients=patients), split=split)
    model = SimpleNamespace(hparams={"split_patients": {"train": ["a", "b"], "val": ["d"], "test": ["c", "e"]}})
    leave_out_fitted_patients(model, data, required=("test",))
    assert split.patients["test"] == ["c"] and split.rows["test"].tolist() == [3, 4]
    assert split.patients["val"] == [] and split.rows["val"].size == 0  # "a" trained it (unused without TTA)
    assert split.notes["left_out_trained_patients"] == ["a", "b"]
    split.patients["val"], split.rows["val"] = ["a"], np.array([0, 1])
    with pytest.raises(DataLayoutError, match=r"every val patient of the fresh split .* \(a\)"):  # TTA needs val
        leave_out_fitted_patients(model, data, required=("test", "val"))
    unknown = SimpleNamespace(hparams={})  # saved before patient lists were recorded: said, and noted with the data
    leave_out_fitted_patients(unknown, data, required=("test",))
    assert split.notes["fitted_patients_unknown"] is True and split.patients["test"] == ["c"]


def test_a_model_trained_on_a_patch_split_is_refused_for_evaluation(make_cfg):
    """split=patches put patches of every patient in training: no split of the data can test it on unseen
    patients, recorded or fresh."""
    model = SimpleNamespace(hparams={"config": {"data": {"source": "synthetic"}, "split": {"name": "patches"}}})
    for split_from in ("recorded", "fresh"):
        with pytest.raises(ConfigError, match="split=patches.*no patient is unseen"):
            evaluation_data(eval_cfg(make_cfg, f"split_from={split_from}"), model)


@pytest.mark.slow
def test_evaluate_reads_moved_data_from_data_root(make_cfg, tmp_path):
    root, cfg = train_on_copied_patches(make_cfg, tmp_path)
    moved = root.rename(tmp_path / "moved")
    with pytest.raises(DataLayoutError):
        evaluate(eval_cfg(make_cfg, f"paths.output_dir={tmp_path / 'gone'}"))
    evaluate(eval_cfg(make_cfg, f"data.root={moved}", f"paths.output_dir={tmp_path / 'moved_eval'}"))
    client = MlflowClient(cfg.logger.tracking_uri)
    (evaluation,) = evaluation_runs(client)  # the failed attempt stopped before opening a run
    assert Path(logged_json(client, evaluation.info.run_id, "data/summary.json")["root"]) == moved.resolve()


@pytest.mark.slow
def test_tta_retunes_the_threshold_on_the_recorded_validation_patients(make_cfg, trained, tmp_path):
    from idclab.config.build import load_classifier
    from idclab.data.datamodule import prepare_data
    from idclab.scoring.thresholds import tune_threshold

    client = MlflowClient(trained.logger.tracking_uri)
    experiment = client.get_experiment_by_name("idc")
    best = max(client.search_runs([experiment.experiment_id]), key=lambda r: r.data.metrics["best_val_auprc"])
    results = evaluate(eval_cfg(make_cfg, "tta=true", f"paths.output_dir={tmp_path / 'tta'}"))
    (evaluation,) = evaluation_runs(client)
    assert evaluation.info.run_name == f"eval {best.info.run_name} tta"
    metrics = evaluation.data.metrics
    assert metrics["threshold_without_tta"] == pytest.approx(best.data.metrics["threshold"])
    # expected: the same rule (max_f1) on the validation patients' TTA probabilities
    classifier = load_classifier(best.data.tags["best_checkpoint"])
    classifier.tta = True
    data = prepare_data(trained.data, trained.split)
    rows = data.split.rows["val"]
    with torch.no_grad():
        probs = classifier.probabilities(torch.from_numpy(np.asarray(data.cache.images[rows])).permute(0, 3, 1, 2))
    expected = tune_threshold(data.index.labels[rows], probs.numpy(), "max_f1")
    assert metrics["threshold"] == pytest.approx(expected, abs=1e-6) == results["threshold"]

    # predict with TTA labels at the threshold tuned with TTA too (the conditions it is used in)
    folder = tmp_path / "files"
    folder.mkdir()
    for path in [data.index.paths[i] for i in rows[:6]]:
        shutil.copy(resolve_root(trained.data) / path, folder)
    predicted = evaluate(eval_cfg(make_cfg, "tta=true", f"predict={folder}", f"paths.output_dir={tmp_path / 'p'}"))
    assert expected != pytest.approx(metrics["threshold_without_tta"])  # so that the next line can fail
    assert predicted["threshold"] == pytest.approx(expected, abs=1e-6)
    with open(tmp_path / "p" / "predictions.csv") as handle:
        written = list(csv.DictReader(handle))
    assert [int(r["label"]) for r in written] == [int(float(r["probability"]) >= expected) for r in written]


def test_tta_on_a_model_that_records_no_validation_patients_says_so():
    from types import SimpleNamespace

    from omegaconf import OmegaConf

    from idclab.config.validation import ConfigError
    from idclab.evaluation.evaluate import recorded_split, require_validation_patients

    ensemble = SimpleNamespace(hparams={"split_patients": {"train": ["a", "b"], "val": [], "test": ["c"]}})
    with pytest.raises(ConfigError, match="records no validation patients to re-tune its threshold with TTA on"):
        require_validation_patients(ensemble)
    require_validation_patients(SimpleNamespace(hparams={"split_patients": {"val": ["d"]}}))  # a single model
    require_validation_patients(SimpleNamespace(hparams={}))  # no record: split_from=fresh re-splits it
    assert recorded_split(ensemble, OmegaConf.create({"name": "stratified"}), needs_val=False).required == ["test"]


def test_a_model_trained_on_a_patch_split_is_never_registered(make_cfg, monkeypatch, tmp_path):
    """Registering it would make a model no one can test honestly the team's champion: refused before the registry
    is touched, also when it only predicts files."""
    model = SimpleNamespace(hparams={"config": {"data": {"source": "synthetic"}, "split": {"name": "patches"}}},
                            threshold=0.5)
    registered = []
    (tmp_path / "patch.png").touch()  # a file to predict
    monkeypatch.setattr(idclab.evaluation.evaluate, "locate_model",
                        lambda cfg, folder: (tmp_path / "best.ckpt", SimpleNamespace(), "runs:/leaky/model"))
    monkeypatch.setattr(idclab.evaluation.evaluate, "load_classifier", lambda path: model)
    monkeypatch.setattr(idclab.evaluation.evaluate, "register", lambda cfg, run: registered.append(run))
    for overrides in (["register.name=idc"], ["register.name=idc", f"predict=[{tmp_path}]"]):
        with pytest.raises(ConfigError, match="trained on split=patches.*not registered"):
            evaluate(eval_cfg(make_cfg, *overrides))
    assert registered == []
