"""Seed ensembles (`ensemble.members=K`): K models of one split, one per seed, used as one model."""

from __future__ import annotations

from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from mlflow.tracking import MlflowClient
from omegaconf import OmegaConf

from idclab.build import build_classifier, load_classifier
from idclab.ensemble import EnsembleClassifier, save_ensemble
from idclab.evaluation import evaluate
from idclab.tracking import MLflowEpochLogger
from idclab.training import train
from idclab.validation import ConfigError, validate_train_config

MEMBER_METRICS = ("val_auprc", "train_loss")


def saved_member(cfg, path: Path, seed: int) -> Path:
    """A member checkpoint as Lightning writes it (state dict and plain hyperparameters), random weights."""
    torch.manual_seed(seed)
    config = OmegaConf.to_container(cfg, resolve=True)
    classifier = build_classifier(config, [30, 10], [0.5] * 3, [0.2] * 3)
    torch.save({"state_dict": classifier.state_dict(), "hyper_parameters": dict(classifier.hparams)}, path)
    return path


@pytest.mark.parametrize("value", [0, -1, 1.5, "two"])
def test_members_must_be_a_positive_integer(make_cfg, value):
    with pytest.raises(ConfigError, match="ensemble.members"):
        validate_train_config(make_cfg(f"ensemble.members={value}"))


def test_a_seed_ensemble_on_several_devices_is_refused(make_cfg):
    with pytest.raises(ConfigError, match="ensemble.members=2 trains its members one after another"):
        validate_train_config(make_cfg("ensemble.members=2", "trainer.devices=2"))


def test_an_ensemble_of_ensembles_is_saved_flat(make_cfg, tmp_path):
    cfg = make_cfg()
    singles = [saved_member(cfg, tmp_path / f"m{k}.ckpt", seed=k) for k in range(3)]
    inner = save_ensemble(singles[:2], 0.4, tmp_path / "inner.ckpt", {})
    outer = save_ensemble([inner, singles[2]], 0.3, tmp_path / "outer.ckpt", {})
    ensemble = load_classifier(outer)
    assert isinstance(ensemble, EnsembleClassifier) and len(ensemble.model) == 3
    images = torch.randint(0, 255, (4, 3, 50, 50), dtype=torch.uint8)
    expected = torch.stack([torch.sigmoid(load_classifier(p)(images)) for p in singles]).mean(0)
    assert torch.allclose(ensemble.probabilities(images), expected, atol=1e-5)
    assert ensemble.threshold == pytest.approx(0.3)


def test_a_prefixed_logger_writes_its_metrics_under_the_prefix():
    logged = []

    class Run:
        run_id = "r"

        def log_metrics(self, metrics, step=None):
            logged.append((dict(metrics), step))

    MLflowEpochLogger(Run(), prefix="member_1/").log_metrics({"val_auprc": 0.5, "epoch": 3})
    assert logged == [({"member_1/val_auprc": 0.5}, 3)]


def member_history(client: MlflowClient, run_id: str, member: int, key: str) -> list[int]:
    return sorted(m.step for m in client.get_metric_history(run_id, f"member_{member}/{key}"))


@pytest.mark.slow
def test_a_seed_ensemble_trains_each_member_and_tests_their_mean(make_cfg, tmp_path):
    cfg = make_cfg("ensemble.members=2", "logger.log_model=true", "report.bootstrap_resamples=20")
    score = train(cfg)
    client = MlflowClient(cfg.logger.tracking_uri)
    (run,) = client.search_runs([client.get_experiment_by_name("idc").experiment_id])
    assert run.info.status == "FINISHED"
    metrics = run.data.metrics
    for member in (0, 1):
        for key in MEMBER_METRICS:
            assert member_history(client, run.info.run_id, member, key) == [0, 1], (member, key)
        assert f"member_{member}/best_val_auprc" in metrics
    assert "val_auprc" not in metrics  # the run's own curves would mix the members'
    assert metrics["best_val_auprc"] == pytest.approx(score)  # the ensemble's validation score
    assert {"test_f1", "test_auroc", "threshold"} <= set(metrics)
    assert run.data.tags["best_checkpoint"].endswith("ensemble.ckpt") and run.data.tags["model_uri"]
    ensemble = load_classifier(run.data.tags["best_checkpoint"])
    assert isinstance(ensemble, EnsembleClassifier) and len(ensemble.model) == 2
    first, second = (dict(m.named_parameters())["model.features.0.0.weight"] for m in ensemble.model)
    assert not torch.equal(first, second)  # different seeds, different members
    assert ensemble.threshold == pytest.approx(metrics["threshold"])
    recorded = ensemble.hparams["split_patients"]
    assert recorded["val"] and recorded["test"]  # no member trained on the validation patients: TTA can re-tune
    evaluate(make_cfg("tta=true", "report.bootstrap_resamples=20", config_name="evaluate"))
    evals = client.search_runs([client.get_experiment_by_name("idc-eval").experiment_id])
    assert [r.data.tags["idclab.source_run_id"] for r in evals] == [run.info.run_id]
    assert "test_f1" in evals[0].data.metrics


@pytest.mark.slow
def test_cross_validation_with_seed_ensembles_flattens_every_folds_members(make_cfg):
    cfg = make_cfg("cv.folds=2", "ensemble.members=2", "split.train=0.8", "split.val=0.2", "split.test=0",
                   "report.bootstrap_resamples=20")
    train(cfg)
    client = MlflowClient(cfg.logger.tracking_uri)
    runs = client.search_runs([client.get_experiment_by_name("idc").experiment_id])
    (parent,) = [r for r in runs if r.data.tags.get("cv") == "parent"]
    folds = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert len(folds) == 2 and all("member_1/best_val_auprc" in f.data.metrics for f in folds)
    ensemble = load_classifier(parent.data.tags["best_checkpoint"])
    assert len(ensemble.model) == 4


def cut_in_second_member(monkeypatch) -> None:
    """Raise in the second member's epoch 1, just after its last.ckpt is written."""
    save = pl.Trainer.save_checkpoint

    def power_cut(self, filepath, *args, **kwargs):
        save(self, filepath, *args, **kwargs)
        if Path(filepath).parts[-3] == "member_1" and Path(filepath).name == "last.ckpt" and self.current_epoch == 1:
            raise RuntimeError("power cut")

    monkeypatch.setattr(pl.Trainer, "save_checkpoint", power_cut)


@pytest.mark.slow
def test_a_killed_seed_ensemble_resumes_its_unfinished_member_only(make_cfg, monkeypatch, tmp_path):
    cfg = make_cfg("ensemble.members=2", "trainer.max_epochs=3")
    cut_in_second_member(monkeypatch)
    with pytest.raises(RuntimeError, match="power cut"):
        train(cfg)
    monkeypatch.undo()
    client = MlflowClient(cfg.logger.tracking_uri)
    (run,) = client.search_runs([client.get_experiment_by_name("idc").experiment_id])
    assert run.info.status == "FAILED"
    first_best = tmp_path / "out" / "member_0" / "checkpoints" / "best.ckpt"
    stamp = first_best.stat().st_mtime_ns
    train(make_cfg(f"resume={run.info.run_id}", "trainer.max_epochs=3"))
    assert first_best.stat().st_mtime_ns == stamp  # the finished member is not trained again
    assert client.get_run(run.info.run_id).info.status == "FINISHED"
    for member in (0, 1):
        assert member_history(client, run.info.run_id, member, "val_auprc") == [0, 1, 2], member
    assert len(load_classifier(tmp_path / "out" / "checkpoints" / "ensemble.ckpt").model) == 2
