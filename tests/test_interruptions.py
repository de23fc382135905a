"""Interruptions and refusals: SIGTERM, kills around a checkpoint, user errors versus bugs, single-class data."""

from __future__ import annotations

import contextlib
import json
import os
import pickle
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from conftest import PROJECT, TINY_TRAINER
from mlflow.entities import Run
from mlflow.tracking import MlflowClient
from omegaconf import OmegaConf
from PIL import Image
from test_reliability import SLOW_EPOCHS, only_run, start_training, wait_for_epochs

from idclab.classifier.module import IDCClassifier
from idclab.cli import is_user_error
from idclab.config.validation import require_both_classes
from idclab.data.layout import DataLayoutError
from idclab.evaluation.calibrate import one_device_trainer
from idclab.termination import sigterm_exits_143
from idclab.tracking.runs import TrackedRun
from idclab.training.pipeline import train

EPOCH_METRICS = ("val_auprc", "val_loss", "train_loss", "train_auprc")


@pytest.mark.slow
def test_sigterm_ends_the_run_killed_with_exit_143_then_resumes(tmp_path, data_dir):
    run_dir = tmp_path / "outputs" / "fixed"
    args = [*SLOW_EPOCHS, f"hydra.run.dir={run_dir}"]
    process = start_training(tmp_path, data_dir, *args)
    wait_for_epochs(tmp_path, 2, process)
    process.send_signal(signal.SIGTERM)
    output, _ = process.communicate(timeout=120)
    assert process.returncode == 143, output[-3000:]
    _, runs = only_run(tmp_path)
    assert [r.info.status for r in runs] == ["KILLED"]
    assert json.loads((run_dir / "run_state.json").read_text())["run_id"] == runs[0].info.run_id
    torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)  # whole, not half-written
    # the same command resumes; an override it cannot apply is named in a warning
    process = start_training(tmp_path, data_dir, *args, "optim.lr=0.5")
    output, _ = process.communicate(timeout=600)
    assert process.returncode == 0, output[-3000:]
    assert "ignored: optim.lr=0.5" in output
    client, runs = only_run(tmp_path)
    assert [r.info.status for r in runs] == ["FINISHED"]
    for key in EPOCH_METRICS:
        assert sorted(m.step for m in client.get_metric_history(runs[0].info.run_id, key)) == list(range(6)), key


def cut_after_validation(monkeypatch) -> None:
    """Raise in epoch 1 once its validation metrics went to the logger, before its checkpoint."""

    def power_cut(self):
        if self.current_epoch == 1:
            raise RuntimeError("power cut")

    monkeypatch.setattr(IDCClassifier, "on_validation_end", power_cut, raising=False)


def cut_after_last_checkpoint(monkeypatch) -> None:
    """Raise in epoch 1 just after its last.ckpt is written."""
    save = pl.Trainer.save_checkpoint

    def power_cut(self, filepath, *args, **kwargs):
        save(self, filepath, *args, **kwargs)
        if Path(filepath).name == "last.ckpt" and self.current_epoch == 1:
            raise RuntimeError("power cut")

    monkeypatch.setattr(pl.Trainer, "save_checkpoint", power_cut)


def interrupted_run(make_cfg, monkeypatch, cut) -> tuple[MlflowClient, Run]:
    """A 3-epoch run cut in epoch 1 by `cut`, and its store's client."""
    cfg = make_cfg("trainer.max_epochs=3")
    cut(monkeypatch)
    with pytest.raises(RuntimeError, match="power cut"):
        train(cfg)
    monkeypatch.undo()
    client = MlflowClient(cfg.logger.tracking_uri)
    (run,) = client.search_runs([client.get_experiment_by_name("idc").experiment_id])
    return client, run


@pytest.mark.slow
@pytest.mark.parametrize("cut", [cut_after_validation, cut_after_last_checkpoint])
def test_each_epoch_lands_in_mlflow_once_across_a_kill_and_resume(make_cfg, monkeypatch, cut):
    client, run = interrupted_run(make_cfg, monkeypatch, cut)
    train(make_cfg(f"resume={run.info.run_id}", "trainer.max_epochs=3"))
    for key in EPOCH_METRICS:
        assert sorted(m.step for m in client.get_metric_history(run.info.run_id, key)) == [0, 1, 2], key


@pytest.mark.slow
def test_an_early_stopped_run_that_fails_after_fitting_resumes_without_training_again(make_cfg, monkeypatch):
    """Early stopping ended the fit after epoch 0; the run then failed choosing its threshold. Resumed, it goes on
    from the fitted model: Lightning does not save `should_stop`, so without idclab's record it trained on."""
    from pytorch_lightning.callbacks import EarlyStopping

    def stop_now(self, trainer):
        trainer.should_stop = True

    def power_cut(*args, **kwargs):
        raise RuntimeError("power cut")

    cfg = make_cfg("trainer.max_epochs=4", "early_stopping.patience=1")
    monkeypatch.setattr(EarlyStopping, "_run_early_stopping_check", stop_now)
    monkeypatch.setattr("idclab.training.fit.choose_threshold", power_cut)
    with pytest.raises(RuntimeError, match="power cut"):
        train(cfg)
    monkeypatch.undo()
    client = MlflowClient(cfg.logger.tracking_uri)
    (run,) = client.search_runs([client.get_experiment_by_name("idc").experiment_id])
    train(make_cfg(f"resume={run.info.run_id}", "trainer.max_epochs=4", "early_stopping.patience=1"))
    assert client.get_run(run.info.run_id).info.status == "FINISHED"
    assert [m.step for m in client.get_metric_history(run.info.run_id, "train_loss")] == [0]


class RunsCode:
    """Unpickling this object calls os.makedirs(marker): what a hostile checkpoint on a shared server could do."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.makedirs, (str(self.marker),)


@pytest.mark.slow
def test_a_resumed_checkpoint_cannot_run_code_even_where_torch_would_unpickle(make_cfg, monkeypatch, tmp_path):
    """Lightning loads `last.ckpt` to resume; with weights_only left unset an older torch (or
    TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1) would unpickle whatever the file names. The run ends FAILED, nothing runs."""
    client, run = interrupted_run(make_cfg, monkeypatch, cut_after_last_checkpoint)
    last = Path(run.data.tags["output_dir"]) / "checkpoints" / "last.ckpt"
    marker = tmp_path / "code-ran"
    torch.save(torch.load(last, weights_only=True) | {"extra": RunsCode(marker)}, last)
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    with pytest.raises(pickle.UnpicklingError):
        train(make_cfg(f"resume={run.info.run_id}", "trainer.max_epochs=3"))
    assert not marker.exists()
    assert client.get_run(run.info.run_id).info.status == "FAILED"


def run_train_raising(tmp_path: Path, error: str) -> subprocess.CompletedProcess:
    """`python train.py` whose training raises `error` (Python source) at once."""
    code = ("import runpy, sys, idclab.training.pipeline, idclab.tracking.runs\n"
            f"def fail(cfg):\n    raise {error}\n"
            "idclab.training.pipeline.train = fail\n"
            "sys.argv = ['train.py']\n"
            f"runpy.run_path({str(PROJECT / 'train.py')!r}, run_name='__main__')\n")
    env = {**os.environ, "IDCLAB_ROOT": str(tmp_path)}
    return subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=300)


@pytest.mark.slow
def test_user_errors_exit_2_in_one_line_and_bugs_exit_1_with_a_traceback(tmp_path):
    done = run_train_raising(tmp_path, "idclab.tracking.runs.RunNotFoundError('no MLflow run abc')")
    assert done.returncode == 2, done.stderr[-3000:]
    assert done.stderr.strip().splitlines()[-1] == "error: no MLflow run abc"
    assert "Traceback" not in done.stderr
    done = run_train_raising(tmp_path, "KeyError('missing')")
    assert done.returncode == 1, done.stderr[-3000:]
    assert "Traceback" in done.stderr and "KeyError: 'missing'" in done.stderr
    assert not is_user_error(KeyError("k")) and not is_user_error(IndexError("i"))


def write_negative_only_dataset(root: Path, patients: int = 6, patches: int = 6) -> None:
    """A folder in the Kaggle layout whose patches are all class 0."""
    rng = np.random.default_rng(0)
    for patient in range(10, 10 + patients):
        folder = root / str(patient) / "0"
        folder.mkdir(parents=True)
        for i in range(patches):
            pixels = rng.integers(0, 255, (50, 50, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(folder / f"{patient}_idx5_x{50 * i}_y0_class0.png")


@pytest.mark.slow
def test_single_class_training_data_is_refused_before_training(make_cfg, tmp_path):
    write_negative_only_dataset(tmp_path / "idc")
    one_line = r"^the train split holds no positive patches \(0 positive, \d+ negative\)[^\n]*$"
    with pytest.raises(DataLayoutError, match=one_line) as err:
        train(make_cfg("data=idc", f"data.root={tmp_path / 'idc'}", "data.decode_workers=1", "data.batch_size=8",
                       *TINY_TRAINER, tiny=False))
    assert is_user_error(err.value)
    assert not (tmp_path / "out" / "checkpoints").exists()


def test_single_class_validation_split_is_refused():
    counts = {"train": {"negative": 30, "positive": 12}, "val": {"negative": 9, "positive": 0},
              "test": {"negative": 5, "positive": 0}}
    with pytest.raises(DataLayoutError, match=r"the val split holds no positive patches \(0 positive, 9 negative\)"):
        require_both_classes(counts)
    require_both_classes(counts | {"val": {"negative": 9, "positive": 1}})  # a one-class test split is allowed



class CountingModel(pl.LightningModule):
    """Counts the batches it sees; sends this process SIGTERM during batch `signal_at`."""

    def __init__(self, signal_at: int | None = None):
        super().__init__()
        self.layer = torch.nn.Linear(2, 1)
        self.signal_at, self.seen = signal_at, 0

    def step(self, batch, batch_idx):
        if batch_idx == self.signal_at:
            os.kill(os.getpid(), signal.SIGTERM)
        self.seen += 1
        return self.layer(batch[0]).sum()

    training_step = test_step = predict_step = step

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def four_batches() -> torch.utils.data.DataLoader:
    return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.ones(4, 2)), batch_size=1)


def cpu_trainer(out_dir: Path) -> pl.Trainer:
    """The one-device trainer that picks thresholds, tests and predicts."""
    return one_device_trainer(OmegaConf.create({"accelerator": "cpu", "precision": "32-true",
                                                "enable_progress_bar": False}), out_dir)


@pytest.mark.parametrize("stage", ["predict", "test"])
@pytest.mark.parametrize("signal_at", [1, 3])  # a batch in the middle, and the last one
def test_sigterm_during_prediction_or_test_stops_at_that_batch_end_with_143(tmp_path, stage, signal_at):
    model = CountingModel(signal_at)
    with pytest.raises(SystemExit) as stopped, sigterm_exits_143():
        trainer = cpu_trainer(tmp_path)
        if stage == "test":
            trainer.test(model, four_batches(), verbose=False)
        else:
            trainer.predict(model, four_batches())
        raise AssertionError("the work after the trainer went on after SIGTERM")
    assert stopped.value.code == 143
    assert model.seen == signal_at + 1


def test_after_a_sigterm_no_later_trainer_trains_and_no_run_opens(tmp_path):
    """A SIGTERM that one trainer took (a fold's test) stops the next one (the next fold's fit) at its first batch
    end, and opens no MLflow run."""
    later = CountingModel()
    with pytest.raises(SystemExit) as stopped, sigterm_exits_143():
        with contextlib.suppress(SystemExit):
            cpu_trainer(tmp_path).test(CountingModel(signal_at=3), four_batches(), verbose=False)
        with contextlib.suppress(SystemExit):
            TrackedRun(NoNewRuns(), "1", "job", {}, system_metrics=None).__enter__()
        cpu_trainer(tmp_path).fit(later, four_batches())
    assert stopped.value.code == 143
    assert later.seen == 1


class NoNewRuns:
    """Stands in for MlflowClient: opening a run fails the test."""

    def create_run(self, *args, **kwargs):
        raise AssertionError("an MLflow run was opened after SIGTERM")
