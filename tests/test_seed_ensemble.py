"""Seed ensembles (`ensemble.members=K`): K models of one split, one per seed, used as one model."""

from __future__ import annotations

import json
import os
from pathlib import Path
from types import SimpleNamespace

import pytest
import pytorch_lightning as pl
import torch
from mlflow.tracking import MlflowClient
from omegaconf import OmegaConf
from sklearn.metrics import average_precision_score
from test_context_runs import only_run

from idclab.classifier.ensemble import EnsembleClassifier, save_ensemble
from idclab.config.build import build_classifier, load_classifier
from idclab.config.validation import ConfigError, one_device, validate_train_config
from idclab.data.datamodule import PatchDataModule, prepare_data
from idclab.evaluation.evaluate import evaluate
from idclab.scoring.thresholds import tune_threshold
from idclab.tracking.runs import MLflowEpochLogger
from idclab.training import callbacks as callbacks_module
from idclab.training import fit as training
from idclab.training.callbacks import EpochClock
from idclab.training.fit import Fitted
from idclab.training.pipeline import train
from idclab.training.plan import fit_plan
from idclab.training.resume import LAST_CHECKPOINT, last_checkpoint, write_state

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


@pytest.mark.parametrize("devices", [["trainer.devices=2"], ["+trainer.num_nodes=2"],
                                     ["trainer.devices=auto", "trainer.accelerator=gpu"]])
@pytest.mark.parametrize(("option", "what"), [("ensemble.members=2", "ensemble.members=2 trains its members"),
                                              ("cv.folds=3", "cv.folds=3 runs its folds")])
def test_seed_ensembles_and_folds_on_several_devices_are_refused(make_cfg, devices, option, what):
    with pytest.raises(ConfigError, match=f"{what} one after another on one device"):
        validate_train_config(make_cfg(option, *devices))


@pytest.mark.parametrize("devices", [["trainer.devices=1"], ["trainer.devices=auto", "trainer.accelerator=cpu"]])
def test_a_seed_ensemble_on_one_device_is_accepted(make_cfg, devices):
    validate_train_config(make_cfg("ensemble.members=2", *devices))
    assert one_device(OmegaConf.create({"devices": [0]}))  # one GPU by index (Lightning refuses a list on the CPU)


def test_members_train_one_after_another_each_from_its_own_seed_and_a_finished_one_is_kept(
        make_cfg, tmp_path, monkeypatch):
    cfg = make_cfg("ensemble.members=3", "seed=7")
    plan = fit_plan(OmegaConf.to_container(cfg, resolve=True))
    fits, seeds = [], []
    monkeypatch.setattr(pl, "seed_everything", lambda seed, workers=False, verbose=True: seeds.append(seed))

    def fake_fit(plan, data, run, out_dir, ckpt_path=None, seed=None, prefix=""):
        fits.append((seed, prefix, out_dir.name, ckpt_path))
        (out_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
        return Fitted(None, None, None, str(saved_member(cfg, out_dir / "checkpoints" / "best.ckpt", seed)), 0.5,
                      train_seconds=10.0 * seed)

    class Run:
        run_id = "run-a"

        def log_metrics(self, metrics):
            pass

    monkeypatch.setattr(training, "fit_member", fake_fit)
    out = tmp_path / "run"
    paths, _, seconds = training.fit_members(plan, None, Run(), out)
    assert seconds == 70 + 80 + 90  # every member's epochs
    assert seeds == [7, 8, 9] and [f[:3] for f in fits] == [(7, "member_0/", "member_0"), (8, "member_1/", "member_1"),
                                                           (9, "member_2/", "member_2")]
    assert paths == [str(out / f"member_{k}" / "checkpoints" / "best.ckpt") for k in range(3)]
    (out / "member_2" / training.MEMBER_FILE).unlink()  # killed before its record was written
    write_state(out, "run-a", {}, None)
    os.utime(out / "run_state.json", ns=(0, 0))  # the run started before every file above
    fits.clear()
    kept_paths, _, seconds = training.fit_members(plan, None, Run(), out, resuming=True)
    assert kept_paths == paths and seconds == 70 + 80 + 90  # the kept members' time from their records
    assert fits == [(9, "member_2/", "member_2", None)]  # no last.ckpt of it: trained again from the start
    last = out / "member_2" / LAST_CHECKPOINT
    last.write_bytes(b"epoch 1")
    (out / "member_2" / training.MEMBER_FILE).unlink()
    fits.clear()
    training.fit_members(plan, None, Run(), out, resuming=True)
    assert fits == [(9, "member_2/", "member_2", last)]  # continues from its last checkpoint


def test_a_member_record_is_kept_only_for_its_own_run_and_its_own_checkpoint(tmp_path):
    record = tmp_path / "member_0" / training.MEMBER_FILE
    best = tmp_path / "member_0" / "checkpoints" / "best.ckpt"
    best.parent.mkdir(parents=True)
    best.write_bytes(b"weights")
    elsewhere = tmp_path / "best.ckpt"
    elsewhere.write_bytes(b"weights")
    cases = [({"run_id": "a", "best_path": str(best), "train_seconds": 12.5}, "a", (str(best), 12.5)),
             ({"run_id": "a", "best_path": str(best)}, "a", (str(best), 0.0)),  # written before the epoch clock
             ({"run_id": "a", "best_path": str(best), "train_seconds": None}, "a", None),
             ({"run_id": "b", "best_path": str(best)}, "a", None),            # an earlier run in the same folder
             ({"run_id": "a", "best_path": str(elsewhere)}, "a", None),       # not the member's own checkpoint
             ({"run_id": "a", "best_path": str(best) + ".gone"}, "a", None),
             ({"run_id": "a"}, "a", None), (["a"], "a", None)]
    for saved, run_id, expected in cases:
        record.write_text(json.dumps(saved))
        assert training.trained_member(record, run_id) == expected, saved
    record.write_text("{not json")
    assert training.trained_member(record, "a") is None
    assert training.trained_member(tmp_path / "absent.json", "a") is None


def test_a_resume_finds_the_runs_own_or_a_members_last_checkpoint_but_not_an_earlier_runs(tmp_path):
    member_last = tmp_path / "member_1" / LAST_CHECKPOINT
    member_last.parent.mkdir(parents=True)
    member_last.write_bytes(b"earlier run")
    write_state(tmp_path, "run-b", {"seed": 1}, None)
    os.utime(member_last, ns=(0, 0))  # written before run-b started: another run's
    assert last_checkpoint(tmp_path) is None
    member_last.write_bytes(b"run-b")
    assert last_checkpoint(tmp_path) == member_last
    stamp = (tmp_path / "run_state.json").stat().st_mtime_ns
    write_state(tmp_path, "run-b", {"seed": 1}, None)  # a resume leaves the start time alone
    write_state(tmp_path, "run-b", {"seed": 1}, {"content": "c"})  # even one by a newer idclab that records more
    assert (tmp_path / "run_state.json").stat().st_mtime_ns == stamp
    own = tmp_path / LAST_CHECKPOINT
    own.parent.mkdir()
    own.write_bytes(b"run-b")
    assert last_checkpoint(tmp_path) == own


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
    client, run = only_run(cfg)
    assert run.info.status == "FINISHED"
    metrics = run.data.metrics
    for member in (0, 1):
        for key in MEMBER_METRICS:
            assert member_history(client, run.info.run_id, member, key) == [0, 1], (member, key)
        assert f"member_{member}/best_val_auprc" in metrics
    assert "val_auprc" not in metrics  # the run's own curves would mix the members'
    assert metrics["best_val_auprc"] == pytest.approx(score)
    assert {"test_f1", "test_auroc", "threshold"} <= set(metrics)
    assert run.data.tags["best_checkpoint"].endswith("ensemble.ckpt") and run.data.tags["model_uri"]
    ensemble = load_classifier(run.data.tags["best_checkpoint"])
    assert isinstance(ensemble, EnsembleClassifier) and len(ensemble.model) == 2
    first, second = (dict(m.named_parameters())["model.features.0.0.weight"] for m in ensemble.model)
    assert not torch.equal(first, second)  # different seeds, different members
    assert ensemble.threshold == pytest.approx(metrics["threshold"])
    # the score and the threshold are the ensemble's own on the whole validation split, not a member's
    data = prepare_data(cfg.data, cfg.split)
    loader = PatchDataModule(data, 64, 0).val_dataloader()
    probs, rows = (torch.cat(parts).numpy() for parts in zip(*pl.Trainer(logger=False).predict(ensemble, loader),
                                                               strict=True))
    targets = data.index.labels[rows]
    assert len(rows) == len(data.split.rows["val"])
    assert score == pytest.approx(average_precision_score(targets, probs), abs=1e-4)
    assert metrics["threshold"] == pytest.approx(tune_threshold(targets, probs, "max_f1"), abs=1e-5)
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
    client, run = only_run(cfg)
    assert run.info.status == "FAILED"
    first_best = tmp_path / "out" / "member_0" / "checkpoints" / "best.ckpt"
    stamp = first_best.stat().st_mtime_ns
    train(make_cfg(f"resume={run.info.run_id}", "trainer.max_epochs=3"))
    assert first_best.stat().st_mtime_ns == stamp  # the finished member is not trained again
    assert client.get_run(run.info.run_id).info.status == "FINISHED"
    for member in (0, 1):
        assert member_history(client, run.info.run_id, member, "val_auprc") == [0, 1, 2], member
    assert len(load_classifier(tmp_path / "out" / "checkpoints" / "ensemble.ckpt").model) == 2
    metrics = client.get_run(run.info.run_id).data.metrics  # the ensemble's time: both members', over both attempts
    assert metrics["train_minutes"] == pytest.approx(metrics["member_0/train_minutes"]
                                                     + metrics["member_1/train_minutes"])
    assert member_history(client, run.info.run_id, 1, "train_minutes") == [0, 1, 2]


def test_the_epoch_clock_sums_the_epochs_and_carries_over_a_resume(monkeypatch):
    now = iter([100.0, 130.0, 200.0, 245.0, 500.0, 510.0])
    monkeypatch.setattr(callbacks_module.time, "perf_counter", lambda: next(now))
    logger = MLflowEpochLogger(SimpleNamespace(run_id="r"), prefix="member_0/")
    logger.holding = True  # as while training: the epoch's metrics wait for its checkpoint
    trainer = SimpleNamespace(current_epoch=0, loggers=[logger])
    clock = EpochClock()
    for epoch in range(2):
        trainer.current_epoch = epoch
        clock.on_train_epoch_start(trainer, None)
        clock.on_train_epoch_end(trainer, None)
    assert clock.seconds == 75.0
    assert logger.held == {0: {"member_0/train_minutes": 0.5}, 1: {"member_0/train_minutes": 1.25}}
    resumed = EpochClock()
    resumed.load_state_dict(clock.state_dict())  # what last.ckpt holds
    resumed.on_train_epoch_start(trainer, None)
    resumed.on_train_epoch_end(trainer, None)
    assert resumed.seconds == 85.0
