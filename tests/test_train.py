"""Training end to end on tiny synthetic data with a temporary MLflow store."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from PIL import Image

from idclab.config.build import CheckpointError, load_classifier
from idclab.training.pipeline import train

OPTIONS = [
    "model=ann", "model=cnn",
    "loss=bce", "loss=weighted", "loss=weighted loss.pos_weight=2.0", "loss=focal", "loss=ranking", "loss=truncated",
    "sampler=none", "sampler=weighted", "sampler=oversample", "sampler=undersample",
    "augment=none", "augment=basic", "augment=stain",
]
TEST_ARTIFACTS = {"classification_report.txt", "classification_report.json", "confusion_matrix.png",
                  "roc_curve.png", "pr_curve.png", "metrics.json", "predictions.npz"}


def runs_of(cfg) -> list:
    client = MlflowClient(cfg.logger.tracking_uri)
    experiment = client.get_experiment_by_name(cfg.logger.experiment_name)
    return client.search_runs([experiment.experiment_id]) if experiment else []


@pytest.mark.slow
@pytest.mark.parametrize("option", OPTIONS)
def test_every_option_trains_and_logs_a_finished_run(make_cfg, option):
    cfg = make_cfg(*option.split())
    score = train(cfg)
    assert 0.0 <= score <= 1.0
    (run,) = runs_of(cfg)
    assert run.info.status == "FINISHED"
    metrics = run.data.metrics
    for name in ("loss", "accuracy", "balanced_accuracy", "precision", "recall", "specificity", "f1",
                 "macro_f1", "auroc", "auprc", "tn", "fp", "fn", "tp"):
        for stage in ("train", "val", "test"):
            assert f"{stage}_{name}" in metrics, f"{stage}_{name}"
    assert "best_val_auprc" in metrics
    params = run.data.params
    assert params["model"] == cfg.model.name
    assert params["loss"] == cfg.loss.name
    assert int(params["data.count.train.positive"]) > 0


@pytest.mark.slow
def test_run_logs_config_data_facts_checkpoint_and_reports(make_cfg):
    cfg = make_cfg("loss=weighted", "trainer.max_epochs=3", "logger.system_metrics_interval=0.2")
    train(cfg)
    (run,) = runs_of(cfg)
    client = MlflowClient(cfg.logger.tracking_uri)
    history = client.get_metric_history(run.info.run_id, "val_auprc")
    assert sorted(m.step for m in history) == [0, 1, 2]  # one point per epoch
    listed = {a.path for a in client.list_artifacts(run.info.run_id, "test")}
    assert {f"test/{name}" for name in TEST_ARTIFACTS} <= listed
    assert [a.path for a in client.list_artifacts(run.info.run_id, "checkpoints")] == ["checkpoints/best.ckpt"]
    local = Path(client.download_artifacts(run.info.run_id, "", str(Path(cfg.paths.output_dir) / "dl")))
    summary = json.loads((local / "data" / "summary.json").read_text())
    assert summary["source"] == "synthetic"
    patients = summary["patients"]
    assert not set(patients["train"]) & set(patients["test"]) and not set(patients["val"]) & set(patients["test"])
    assert sum(summary["split_counts"]["train"].values()) > 0
    assert "loss:" in (local / "config" / "config.yaml").read_text()
    for name in ("confusion_matrix.png", "roc_curve.png", "pr_curve.png"):
        with Image.open(local / "test" / name) as image:
            assert image.size[0] > 300 and image.size[1] > 300
    report = json.loads((local / "test" / "classification_report.json").read_text())
    assert report["IDC (1)"]["support"] + report["non-IDC (0)"]["support"] == run.data.metrics["test_tp"] + \
        run.data.metrics["test_fn"] + run.data.metrics["test_tn"] + run.data.metrics["test_fp"]
    checkpoint = Path(run.data.tags["best_checkpoint"])
    assert checkpoint.is_file()
    classifier = load_classifier(checkpoint)
    assert classifier.hparams["config"]["loss"]["name"] == "weighted"
    assert run.data.tags["idclab.kind"] == "train"
    assert run.data.tags["data_source"] == "synthetic"
    inputs = {d.tags[0].value: d.dataset for d in run.inputs.dataset_inputs}
    assert set(inputs) == {"train", "val", "test"}
    assert json.loads(inputs["test"].profile)["num_rows"] == sum(summary["split_counts"]["test"].values())
    assert len({d.digest for d in inputs.values()}) == 3 and inputs["train"].source
    assert any(name.startswith("system/cpu_utilization") for name in run.data.metrics)


@pytest.mark.slow
def test_a_run_can_skip_system_metrics_and_the_checkpoint_upload(make_cfg):
    cfg = make_cfg("trainer.max_epochs=1", "logger.system_metrics_interval=null", "logger.log_checkpoint=false")
    train(cfg)
    (run,) = runs_of(cfg)
    assert run.info.status == "FINISHED"
    assert not [name for name in run.data.metrics if name.startswith("system/")]
    assert MlflowClient(cfg.logger.tracking_uri).list_artifacts(run.info.run_id, "checkpoints") == []
    assert Path(run.data.tags["best_checkpoint"]).is_file()  # kept on disk, only not uploaded


@pytest.mark.slow
def test_a_crash_marks_the_run_failed(make_cfg, monkeypatch):
    cfg = make_cfg()

    def explode(self, batch, batch_idx):
        raise RuntimeError("boom in training_step")

    monkeypatch.setattr("idclab.classifier.module.IDCClassifier.training_step", explode)
    with pytest.raises(RuntimeError, match="boom"):
        train(cfg)
    (run,) = runs_of(cfg)
    assert run.info.status == "FAILED"
    assert "boom" in run.data.tags["error"]


@pytest.mark.slow
def test_ctrl_c_marks_the_run_killed(make_cfg, monkeypatch):
    cfg = make_cfg()

    def interrupt(self, *args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("idclab.training.fit.test_and_report", interrupt)
    with pytest.raises(KeyboardInterrupt):
        train(cfg)
    (run,) = runs_of(cfg)
    assert run.info.status == "KILLED"


@pytest.mark.slow
def test_non_finite_loss_stops_with_a_clear_error(make_cfg):
    cfg = make_cfg("optim.lr=1e30", "model=ann")
    with pytest.raises(FloatingPointError, match="training loss is (nan|inf)"):
        train(cfg)
    (run,) = runs_of(cfg)
    assert run.info.status == "FAILED"


@pytest.mark.slow
def test_checkpoint_from_another_model_config_is_refused(make_cfg, tmp_path):
    import torch

    cfg = make_cfg("model=cnn", "trainer.max_epochs=1")
    train(cfg)
    (run,) = runs_of(cfg)
    checkpoint = torch.load(run.data.tags["best_checkpoint"], weights_only=True)
    checkpoint["hyper_parameters"]["config"]["model"]["channels"] = [8, 16, 32]
    torch.save(checkpoint, tmp_path / "tampered.ckpt")
    with pytest.raises(CheckpointError, match="does not match"):
        load_classifier(tmp_path / "tampered.ckpt")


class Payload:
    """An arbitrary class: unpickling it would run code outside the weights-only allowlist."""


def test_checkpoint_with_arbitrary_objects_is_refused(tmp_path):
    import torch

    torch.save({"state_dict": {}, "payload": Payload()}, tmp_path / "pickle.ckpt")
    with pytest.raises(CheckpointError, match=r"holds a pickled object \(test_train.Payload\), which idclab never "
                                              "loads") as error:
        load_classifier(tmp_path / "pickle.ckpt")
    assert "\n" not in str(error.value) and "weights_only" not in str(error.value)  # no advice to load it anyway
    (tmp_path / "train.log").write_text("epoch 1/10\n")
    with pytest.raises(CheckpointError, match=r"train.log is not a checkpoint \(torch.load: ") as error:
        load_classifier(tmp_path / "train.log")
    assert "\n" not in str(error.value)


@pytest.mark.slow
def test_resampler_redraws_every_epoch_during_fit(make_cfg, monkeypatch):
    from idclab.data.sampling import ImbalancedLearnSampler

    epochs = []
    original = ImbalancedLearnSampler.set_epoch

    def spy(self, epoch):
        epochs.append(epoch)
        original(self, epoch)

    monkeypatch.setattr(ImbalancedLearnSampler, "set_epoch", spy)
    train(make_cfg("sampler=oversample", "trainer.max_epochs=3"))
    assert epochs == [0, 1, 2]


@pytest.mark.slow
def test_external_split_trains_and_tests_on_the_second_site(make_cfg, data_dir):
    from idclab.data.synthetic import SyntheticSpec, generate

    other = generate(data_dir / "site2", SyntheticSpec(n_patients=3, min_grid=4, max_grid=4, seed=9))
    cfg = make_cfg("split=external", f"split.root={other}", "split.val=0.3")  # val needs both classes
    train(cfg)
    (run,) = runs_of(cfg)
    assert run.info.status == "FINISHED" and run.data.tags["split"] == "external"
    assert run.data.params["split.root"] == str(other)


def test_the_recipe_is_the_configuration_its_studies_chose(make_cfg):
    cfg = make_cfg("experiment=recipe")  # Youden: docs/results/context_and_thresholds.md
    assert cfg.threshold.name == "youden" and cfg.context.name == "neighbours" and cfg.ensemble.members == 2
    assert cfg.data.neighbourhood == 2  # docs/results/neighbourhood.md: the 5x5 view, confirmed in this setting


@pytest.mark.slow
def test_the_recipe_composes_with_an_external_split_into_one_run_with_test_metrics(make_cfg, data_dir):
    from idclab.data.synthetic import SyntheticSpec, generate

    other = generate(data_dir / "site2", SyntheticSpec(n_patients=3, min_grid=4, max_grid=4, seed=9))
    cfg = make_cfg("experiment=recipe", "split=external", f"split.root={other}", "split.val=0.3")
    assert cfg.logger.experiment_name == "recipe" and cfg.loss.name == "bce"
    train(cfg)
    client = MlflowClient(cfg.logger.tracking_uri)
    (run,) = client.search_runs([client.get_experiment_by_name("recipe").experiment_id])
    assert run.info.status == "FINISHED" and "mlflow.parentRunId" not in run.data.tags
    assert run.data.params["split"] == "external" and "test_balanced_accuracy" in run.data.metrics
    assert run.data.params["context"] == "neighbours" and "context_weight" in run.data.metrics
    assert run.data.params["ensemble.members"] == "2" and run.data.tags["best_checkpoint"].endswith("ensemble.ckpt")


def test_the_best_checkpoint_follows_the_monitor_in_its_direction(make_cfg, tmp_path):
    """checkpoint.monitor and checkpoint.mode pick the kept epoch (and early stopping's): a loss is kept lowest."""
    from omegaconf import OmegaConf

    from idclab.training.plan import fit_plan
    from idclab.training.trainer import make_trainer

    for monitor, mode in (("val_auprc", "max"), ("val_loss", "min")):
        config = OmegaConf.to_container(make_cfg(f"checkpoint.monitor={monitor}", f"checkpoint.mode={mode}",
                                                 "early_stopping.patience=2"), resolve=True)
        trainer, checkpoint = make_trainer(fit_plan(config), tmp_path, logger=False)
        assert (checkpoint.monitor, checkpoint.mode) == (monitor, mode)
        (stopping,) = [c for c in trainer.callbacks if type(c).__name__ == "EarlyStopping"]
        assert (stopping.monitor, stopping.mode) == (monitor, mode)


@pytest.mark.slow
def test_a_fast_dev_run_checks_the_pipeline_with_one_batch_and_tests_its_last_weights(make_cfg):
    """trainer.fast_dev_run: one batch of each loop, no checkpoint saved (Lightning also mutes its logger): the run
    tests the weights it ends with and writes its report."""
    cfg = make_cfg("trainer.fast_dev_run=true")
    train(cfg)
    client = MlflowClient(cfg.logger.tracking_uri)
    (run,) = client.search_runs([client.get_experiment_by_name("idc").experiment_id])
    out_dir = Path(run.data.tags["output_dir"])
    assert run.info.status == "FINISHED" and not list(out_dir.glob("checkpoints/*.ckpt"))
    report = json.loads((out_dir / "test" / "metrics.json").read_text())
    assert "test_auroc" in report and report["test_tp"] + report["test_fn"] + report["test_tn"] + report[
        "test_fp"] <= cfg.data.batch_size  # one test batch
