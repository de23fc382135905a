"""Tracking details that need no training: dataset inputs under concurrent sweep jobs, a lost Ctrl-C."""

from __future__ import annotations

import contextlib
import re
import signal
from types import SimpleNamespace

import pandas as pd
import pytest
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from idclab.classifier.interrupts import InterruptGuard
from idclab.termination import CtrlC
from idclab.tracking.runs import RunNotFoundError, TrackedRun, fetch_model

SPLITS = {"train": pd.DataFrame({"patient": ["8863"], "label": [1]})}


class RacingClient:
    """Stands in for MlflowClient: `log_inputs` fails `failures` times with `message`, then records the call."""

    def __init__(self, failures: int, message: str):
        self.failures, self.message, self.logged = failures, message, []

    def log_inputs(self, run_id: str, datasets: list) -> None:
        if self.failures:
            self.failures -= 1
            raise MlflowException(self.message)
        self.logged.append((run_id, [d.dataset.name for d in datasets]))


def test_a_dataset_inserted_by_a_parallel_job_is_linked_on_retry():
    client = RacingClient(1, "(sqlite3.IntegrityError) UNIQUE constraint failed: datasets.experiment_id")
    run = TrackedRun(client, "1", "job", {}, resume_run_id="r1")
    run.log_datasets(SPLITS, source="/data")
    assert client.logged == [("r1", ["train"])]


def test_other_tracking_errors_are_not_retried():
    client = RacingClient(1, "RESOURCE_DOES_NOT_EXIST: no run r1")
    with pytest.raises(MlflowException, match="RESOURCE_DOES_NOT_EXIST"):
        TrackedRun(client, "1", "job", {}, resume_run_id="r1").log_datasets(SPLITS, source="/data")
    assert client.logged == []


@pytest.fixture
def ctrl_c(monkeypatch):
    """A Ctrl-C received (the state is per process: undone after the test)."""
    monkeypatch.setattr(CtrlC, "received", False)
    return CtrlC


def test_a_ctrl_c_lost_in_a_finalizer_is_raised_at_the_next_batch_end(ctrl_c):
    guard = InterruptGuard()
    guard.on_train_batch_end()  # nothing received: training goes on
    with contextlib.suppress(KeyboardInterrupt):  # what Python does to an exception raised inside __del__
        ctrl_c.handler(signal.SIGINT, None)
    with pytest.raises(KeyboardInterrupt):
        guard.on_train_batch_end()
    with pytest.raises(KeyboardInterrupt):
        guard.on_validation_batch_end()


class ClosingClient:
    """Stands in for MlflowClient: records how runs end."""

    def __init__(self):
        self.ended = []

    def update_run(self, run_id: str, status: str) -> None: ...

    def set_tag(self, run_id: str, key: str, value: str) -> None: ...

    def set_terminated(self, run_id: str, status: str) -> None:
        self.ended.append(status)


class TaggingClient(ClosingClient):
    """Stands in for MlflowClient: records the tags set."""

    def __init__(self):
        super().__init__()
        self.tags = {}

    def set_tag(self, run_id: str, key: str, value: str) -> None:
        self.tags[key] = value


def test_a_resumed_run_keeps_the_tags_of_the_command_that_started_it():
    """The resuming command's overrides are ignored (the run goes on with its own config): its tags must not say
    otherwise. Only `resumed` and the sweep parent the run now belongs to are written."""
    client = TaggingClient()
    with TrackedRun(client, "1", "job", {"overrides": "loss=weighted", "override.loss": "weighted"},
                    resume_run_id="r1", parent_run_id="p2", system_metrics=None):
        pass
    assert client.tags == {"resumed": "true", "mlflow.parentRunId": "p2"}


def test_a_run_that_lost_a_ctrl_c_ends_killed_not_finished(ctrl_c):
    client = ClosingClient()
    with TrackedRun(client, "1", "job", {}, resume_run_id="r1", system_metrics=None):
        pass
    assert client.ended == ["FINISHED"]
    with pytest.raises(KeyboardInterrupt), TrackedRun(client, "1", "job", {}, resume_run_id="r1", system_metrics=None):
        ctrl_c.received = True  # lost inside the block
    assert client.ended == ["FINISHED", "KILLED"]
    with pytest.raises(KeyboardInterrupt), TrackedRun(client, "1", "job", {}, resume_run_id="r1", system_metrics=None):
        raise AssertionError("a run opened after the Ctrl-C")
    assert client.ended == ["FINISHED", "KILLED"]


def test_a_served_model_requires_public_versions_not_local_builds():
    """`torch==2.14.1+cu130` names a local CUDA build that PyPI does not have: serving would fail to install."""
    from idclab.tracking.runs import pip_requirements
    versions = {"python": "3.11.7", "platform": "Linux", "idclab": "0.1", "torch": "2.14.1+cu130",
                "torchvision": "0.29.1+cpu", "mlflow": "3.17.2", "pillow": "not installed"}
    assert pip_requirements(versions) == ["torch==2.14.1", "torchvision==0.29.1", "mlflow==3.17.2"]


@pytest.mark.parametrize("uri", ["models:/nope@champion", "models:/nope/3", "runs:/0123456789abcdef/model"])
def test_a_model_that_is_not_there_is_one_line_naming_it(tmp_path, new_store, uri):
    """A wrong model name, alias, version or run is the user's to fix: RunNotFoundError (exit 2), not a trace."""
    client = MlflowClient(new_store(tmp_path))
    with pytest.raises(RunNotFoundError, match=re.escape(uri)) as error:
        fetch_model(client, uri, tmp_path / "downloaded")
    assert "\n" not in str(error.value)


@pytest.mark.parametrize("resume", [False, True])
def test_a_run_that_fails_while_opening_is_not_left_running(tmp_path, new_store, monkeypatch, resume):
    """A failure after the run exists in the store but before the `with` block (the system-metrics monitor, a
    tag) still ends the run, FAILED with the error: no run stays RUNNING."""
    client = MlflowClient(new_store(tmp_path))
    experiment = client.create_experiment("idc")
    earlier = None
    if resume:
        earlier = client.create_run(experiment).info.run_id
        client.set_terminated(earlier, "KILLED")

    def broken(self):
        raise OSError("no /proc here")

    monkeypatch.setattr("idclab.tracking.runs.SystemMetricsMonitor.start", broken)
    with pytest.raises(OSError, match="no /proc"), TrackedRun(client, experiment, "run", {}, earlier, None, 10.0):
        pass
    (run,) = client.search_runs([experiment])
    assert run.info.status == "FAILED" and "no /proc" in run.data.tags["error"]


def test_a_sweep_parent_that_fails_before_its_jobs_is_not_left_running(tmp_path, new_store, monkeypatch):
    from omegaconf import OmegaConf

    import idclab.tracking.sweep
    from idclab.tracking.sweep import SweepParentRun

    uri = new_store(tmp_path)
    config = OmegaConf.create({
        "logger": {"tracking_uri": uri, "experiment_name": "idc", "artifact_location": str(tmp_path / "mlruns")},
        "hydra": {"sweep": {"dir": str(tmp_path / "multirun")}, "overrides": {"task": ["loss=focal,bce"]},
                  "sweeper": {"_target_": "hydra._internal.core_plugins.basic_sweeper.BasicSweeper"},
                  "launcher": {"_target_": "hydra._internal.core_plugins.basic_launcher.BasicLauncher"}}})
    monkeypatch.setattr(idclab.tracking.sweep.HydraConfig, "instance",
                        lambda: SimpleNamespace(set_config=lambda c: None))

    def full_disk(path, value):
        raise OSError("No space left on device")

    monkeypatch.setattr(idclab.tracking.sweep, "write_json", full_disk)
    with pytest.raises(OSError, match="No space"):
        SweepParentRun().on_multirun_start(config)
    client = MlflowClient(uri)
    (run,) = client.search_runs([client.get_experiment_by_name("idc").experiment_id])
    assert run.info.status == "FAILED" and "No space" in run.data.tags["error"]


def test_a_run_records_the_commit_its_process_started_with_not_the_checkout_at_its_start(make_cfg, monkeypatch):
    """A long multirun imports its code once: a commit made while it runs is not the code its later jobs run."""
    from omegaconf import OmegaConf

    from idclab.tracking import inputs, runs

    config = OmegaConf.to_container(make_cfg(), resolve=True)
    before = inputs.run_tags(config, {"overrides": [], "sweep": None}, {})
    monkeypatch.setattr(runs, "git_state", lambda folder: {"mlflow.source.git.commit": "f" * 40, "git_dirty": "true"})
    monkeypatch.setattr(inputs, "git_state", runs.git_state, raising=False)
    after = inputs.run_tags(config, {"overrides": [], "sweep": None}, {})
    assert after["mlflow.source.git.commit"] == before["mlflow.source.git.commit"] != "f" * 40
    assert after["git_dirty"] == before["git_dirty"]


def test_a_sweeps_last_line_counts_every_status_of_its_jobs():
    from idclab.tracking.sweep import children_line

    assert children_line({"FINISHED": 2}) == "2 finished, 0 failed of 2"
    assert children_line({"FINISHED": 2, "KILLED": 1}) == "2 finished, 0 failed, 1 killed of 3"  # an earlier attempt


def training_run(client: MlflowClient, experiment_id: str, split: str, auprc: float, test: str = "0.15") -> str:
    """A finished training run as train.py logs it, trained on `split` with a `test` share of held-out patients."""
    from mlflow.entities import Metric, Param

    run = client.create_run(experiment_id, run_name=f"split={split}", tags={"idclab.kind": "train"})
    client.log_batch(run.info.run_id, metrics=[Metric("best_val_auprc", auprc, 0, 0)],
                     params=[Param("split", split), Param("seed", "1"), Param("split.test", test)])
    client.set_terminated(run.info.run_id, "FINISHED")
    return run.info.run_id


def test_the_best_run_is_never_one_trained_on_a_patch_split(tmp_path, new_store):
    """split=patches validates on patients it also trained on: its validation figures are inflated, so it would
    win any selection, and its model cannot be tested honestly. Selection passes over it, and says so when it is
    all there is."""
    from idclab.tracking.compare import best_run
    from idclab.tracking.runs import training_runs
    from idclab.tracking.store import find_best_run

    client = MlflowClient(new_store(tmp_path))
    experiment_id = client.create_experiment("idc")
    leaky = training_run(client, experiment_id, "patches", 0.95)
    with pytest.raises(RunNotFoundError, match="every finished training run .* was trained on split=patches"):
        find_best_run(client, "idc", "best_val_auprc", "max")
    assert best_run(training_runs(client, experiment_id)) is None
    honest = training_run(client, experiment_id, "stratified", 0.80)
    assert find_best_run(client, "idc", "best_val_auprc", "max").info.run_id == honest
    best = best_run(training_runs(client, experiment_id))
    assert best.run_id == honest and best.run_id != leaky and best.score == pytest.approx(0.80)


def test_evaluate_tests_the_best_run_that_has_test_patients(tmp_path, new_store):
    """A cross-validation of every patient (split.test=0) has no test patients: testing selects among the others
    (predicting or registering may still take it), and says so when it is all there is."""
    from idclab.tracking.store import find_best_run

    client = MlflowClient(new_store(tmp_path))
    experiment_id = client.create_experiment("idc")
    every_patient = training_run(client, experiment_id, "stratified", 0.95, test="0")
    with pytest.raises(RunNotFoundError, match="every finished training run .* has no test patients .*ckpt_path"):
        find_best_run(client, "idc", "best_val_auprc", "max", tested=True)
    assert find_best_run(client, "idc", "best_val_auprc", "max").info.run_id == every_patient
    held_out = training_run(client, experiment_id, "stratified", 0.80)
    assert find_best_run(client, "idc", "best_val_auprc", "max", tested=True).info.run_id == held_out


def test_only_a_model_the_run_logged_is_registered():
    """The `model_uri` tag is editable by anyone: it must name a logged model of the run itself."""
    from idclab.tracking.runs import RunNotFoundError, logged_model_of

    class Store:
        def get_logged_model(self, model_id):
            if model_id == "m-gone":
                raise MlflowException("not found")
            return SimpleNamespace(source_run_id={"m-mine": "r1", "m-other": "r2"}[model_id])

    def run(tags):
        return SimpleNamespace(info=SimpleNamespace(run_id="r1"), data=SimpleNamespace(tags=tags))

    assert logged_model_of(Store(), run({"model_uri": "models:/m-mine"})) == "models:/m-mine"
    for uri in ("models:/m-other", "models:/m-gone"):
        with pytest.raises(RunNotFoundError, match=f"model_uri tag names {uri}, which is not a model that run logged"):
            logged_model_of(Store(), run({"model_uri": uri}))
    with pytest.raises(RunNotFoundError, match="has no logged model"):
        logged_model_of(Store(), run({}))


@pytest.mark.parametrize(("mlmodel", "message"), [
    ("flavors: [", "its MLmodel is not YAML"),
    ("flavors:\n  python_function:\n    artifacts:\n      checkpoint:\n        path: 5\n",
     "is not an idclab model"),
])
def test_a_malformed_mlmodel_is_one_clear_error(tmp_path, mlmodel, message):
    from idclab.tracking.store import ModelFormatError, download_model_checkpoint

    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "MLmodel").write_text(mlmodel)
    client = MlflowClient(f"sqlite:///{tmp_path / 'db'}")
    with pytest.raises(ModelFormatError, match=message):
        download_model_checkpoint(client, str(tmp_path / "model"), tmp_path / "downloaded")
